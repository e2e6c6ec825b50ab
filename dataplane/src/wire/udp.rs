//! UDP datagrams (RFC 768).
