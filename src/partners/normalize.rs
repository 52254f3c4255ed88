//! Value normalisation shared by every partner (partners.md §1).

/// Longest mapped (canonical) value accepted, in characters.
pub const MAX_VALUE_CHARS: usize = 256;
