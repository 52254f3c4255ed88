//! `users erase`: the command-line side of erasure on request (the admin API's
//! `DELETE /v1/apps/{app_id}/users`).

use clap::{Args, Subcommand};
use serde_json::json;

use crate::apps::AppsError;
use crate::domain::{AppId, IdentifierKind};
use crate::store::Store;
use crate::StartError;

#[derive(Debug, Subcommand)]
pub enum UsersCommand {
    /// Erase one user: the attribution, every stored event carrying any of the
    /// user's identifiers, their delivery log rows and forwarding messages; keeps a
    /// receipt without the identifier. Running it again erases nothing more.
    Erase {
        app_id: AppId,
        #[command(flatten)]
        identifier: Identifier,
        /// Print one JSON object instead of text.
        #[arg(long)]
        json: bool,
    },
}

/// Exactly one identifier per call.
#[derive(Debug, Args)]
#[group(required = true, multiple = false)]
pub struct Identifier {
    #[arg(long)]
    user_id: Option<String>,
    #[arg(long)]
    idfa: Option<String>,
    #[arg(long)]
    idfv: Option<String>,
    #[arg(long)]
    google_aid: Option<String>,
    #[arg(long)]
    android_id: Option<String>,
    #[arg(long)]
    partner_device_id: Option<String>,
}

impl Identifier {
    fn kind_and_value(self) -> Option<(IdentifierKind, String)> {
        [
            (IdentifierKind::UserId, self.user_id),
            (IdentifierKind::Idfa, self.idfa),
            (IdentifierKind::Idfv, self.idfv),
            (IdentifierKind::GoogleAid, self.google_aid),
            (IdentifierKind::AndroidId, self.android_id),
            (IdentifierKind::PartnerDeviceId, self.partner_device_id),
        ]
        .into_iter()
        .find_map(|(kind, value)| value.filter(|v| !v.is_empty()).map(|v| (kind, v)))
    }
}

pub async fn run(cmd: UsersCommand, store: &dyn Store) -> Result<(), StartError> {
    match cmd {
        UsersCommand::Erase {
            app_id,
            identifier,
            json,
        } => {
            let Some((kind, value)) = identifier.kind_and_value() else {
                return Err(StartError::EmptyIdentifier);
            };
            if store.get_app(app_id).await?.is_none() {
                return Err(AppsError::UnknownApp(app_id).into());
            }
            let receipt = store
                .erase_user(app_id, kind, &value, chrono::Utc::now())
                .await?;
            let c = receipt.counts;
            if json {
                println!("{}", json!({"erased": c, "erasure_id": receipt.id}));
            } else {
                println!(
                    "erased: {} attributions, {} events, {} delivery log rows, {} outbox \
                     messages (receipt {})",
                    c.attributions, c.events, c.deliveries, c.outbox, receipt.id
                );
            }
            Ok(())
        }
    }
}
