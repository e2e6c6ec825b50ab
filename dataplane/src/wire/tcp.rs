//! TCP segments (RFC 9293 section 3.1) and options.
