//! Just enough of the Quack v1 wire format (DuckDB 1.5.x, BinarySerializer envelope) to open a
//! session, run a query to its end and disconnect. It is not a general decoder: the bench
//! controls the SQL, so results are never decoded, only walked far enough to learn whether
//! more FETCHes are needed and which result uuid to fetch. The layouts are checked against the
//! captured messages in `tests/data/quack/`.

use anyhow::{bail, Context, Result};

pub const CONNECTION_REQUEST: u64 = 1;
pub const CONNECTION_RESPONSE: u64 = 2;
pub const PREPARE_REQUEST: u64 = 3;
pub const PREPARE_RESPONSE: u64 = 4;
pub const FETCH_REQUEST: u64 = 7;
pub const FETCH_RESPONSE: u64 = 8;
pub const SUCCESS_RESPONSE: u64 = 10;
pub const DISCONNECT: u64 = 11;
pub const ERROR_RESPONSE: u64 = 100;

const END: [u8; 2] = [0xff, 0xff];
/// What responses carry in header field 3 (`optional_idx` invalid), and what the CLI sends
/// with DISCONNECT.
const NO_QUERY_ID: u64 = u64::MAX;

fn put_varint(out: &mut Vec<u8>, mut v: u64) {
    loop {
        let byte = (v & 0x7f) as u8;
        v >>= 7;
        if v == 0 {
            out.push(byte);
            return;
        }
        out.push(byte | 0x80);
    }
}

fn put_field(out: &mut Vec<u8>, id: u16) {
    out.extend_from_slice(&id.to_le_bytes());
}

fn put_str(out: &mut Vec<u8>, s: &[u8]) {
    put_varint(out, s.len() as u64);
    out.extend_from_slice(s);
}

fn header(ty: u64, conn_id: Option<&[u8]>, query_id: u64) -> Vec<u8> {
    let mut out = Vec::with_capacity(64);
    put_field(&mut out, 1);
    put_varint(&mut out, ty);
    if let Some(id) = conn_id {
        put_field(&mut out, 2);
        put_str(&mut out, id);
    }
    put_field(&mut out, 3);
    put_varint(&mut out, query_id);
    out.extend_from_slice(&END);
    out
}

/// CONNECTION_REQUEST as the 1.5.5 CLI sends it: token in clear, version, platform, and
/// Quack protocol version 1..1.
pub fn connection_request(token: &str) -> Vec<u8> {
    let mut out = header(CONNECTION_REQUEST, None, 1);
    put_field(&mut out, 1);
    put_str(&mut out, token.as_bytes());
    put_field(&mut out, 2);
    put_str(&mut out, b"v1.5.5");
    put_field(&mut out, 3);
    put_str(&mut out, b"linux_amd64");
    put_field(&mut out, 4);
    put_varint(&mut out, 1);
    put_field(&mut out, 5);
    put_varint(&mut out, 1);
    out.extend_from_slice(&END);
    out
}

pub fn prepare_request(conn_id: &[u8], query_id: u64, sql: &str) -> Vec<u8> {
    let mut out = header(PREPARE_REQUEST, Some(conn_id), query_id);
    put_field(&mut out, 1);
    put_str(&mut out, sql.as_bytes());
    out.extend_from_slice(&END);
    out
}

/// `uuid` is the result uuid exactly as the PREPARE_RESPONSE encoded it (a hugeint: signed
/// varint upper, varint lower), so it is copied back without being decoded.
pub fn fetch_request(conn_id: &[u8], query_id: u64, uuid: &[u8]) -> Vec<u8> {
    let mut out = header(FETCH_REQUEST, Some(conn_id), query_id);
    put_field(&mut out, 1);
    out.extend_from_slice(uuid);
    out.extend_from_slice(&END);
    out
}

pub fn disconnect_request(conn_id: &[u8]) -> Vec<u8> {
    let mut out = header(DISCONNECT, Some(conn_id), NO_QUERY_ID);
    out.extend_from_slice(&END);
    out
}

struct Reader<'a> {
    buf: &'a [u8],
    pos: usize,
}

impl<'a> Reader<'a> {
    fn take(&mut self, n: usize) -> Result<&'a [u8]> {
        let end = self.pos.checked_add(n).filter(|&e| e <= self.buf.len());
        let end = end.with_context(|| format!("message truncated at byte {}", self.pos))?;
        let out = &self.buf[self.pos..end];
        self.pos = end;
        Ok(out)
    }

    fn field(&mut self) -> Result<u16> {
        let b = self.take(2)?;
        Ok(u16::from_le_bytes([b[0], b[1]]))
    }

    fn peek_field(&self) -> Option<u16> {
        let b = self.buf.get(self.pos..self.pos + 2)?;
        Some(u16::from_le_bytes([b[0], b[1]]))
    }

    fn varint(&mut self) -> Result<u64> {
        let mut v = 0u64;
        for shift in (0..64).step_by(7) {
            let b = self.take(1)?[0];
            v |= u64::from(b & 0x7f) << shift;
            if b & 0x80 == 0 {
                return Ok(v);
            }
        }
        bail!("varint longer than 10 bytes at byte {}", self.pos)
    }

    fn string(&mut self) -> Result<&'a [u8]> {
        let len = usize::try_from(self.varint()?)?;
        self.take(len)
    }
}

/// A response's header: its message type, the connection id (CONNECTION_RESPONSE only) and
/// where the body object starts.
pub struct Header {
    pub ty: u64,
    pub conn_id: Option<Vec<u8>>,
    body_start: usize,
}

pub fn parse_header(buf: &[u8]) -> Result<Header> {
    let mut r = Reader { buf, pos: 0 };
    let (mut ty, mut conn_id) = (None, None);
    loop {
        match r.field()? {
            1 => ty = Some(r.varint()?),
            2 => conn_id = Some(r.string()?.to_vec()),
            3 => {
                r.varint()?;
            }
            0xffff => break,
            other => bail!("unexpected header field {other}"),
        }
    }
    Ok(Header {
        ty: ty.context("response header has no message type")?,
        conn_id,
        body_start: r.pos,
    })
}

/// The text of an ERROR_RESPONSE (body field 1).
pub fn error_message(buf: &[u8], h: &Header) -> String {
    let mut r = Reader {
        buf,
        pos: h.body_start,
    };
    match (r.field(), r.string()) {
        (Ok(1), Ok(text)) => String::from_utf8_lossy(text).into_owned(),
        _ => "ERROR_RESPONSE without a message".to_string(),
    }
}

/// What the client needs from a PREPARE_RESPONSE.
pub struct Prepared {
    pub needs_more_fetch: bool,
    /// The encoded result uuid (field 5), to be echoed in FETCH requests.
    pub uuid: Option<Vec<u8>>,
}

/// Reads fields 1 (result types), 2 (names) and 3 (needs_more_fetch); field 4 (the chunks) is
/// skipped by reading the uuid, the last field, from the end of the body.
pub fn parse_prepare_response(buf: &[u8], h: &Header) -> Result<Prepared> {
    let mut r = Reader {
        buf,
        pos: h.body_start,
    };
    if r.peek_field() == Some(1) {
        r.field()?;
        for _ in 0..r.varint()? {
            // LogicalType object: field 100 = type id; flat types have nothing else.
            loop {
                match r.field()? {
                    100 => {
                        r.varint()?;
                    }
                    0xffff => break,
                    other => bail!(
                        "result type with field {other}: the bench only parses flat result types"
                    ),
                }
            }
        }
    }
    if r.peek_field() == Some(2) {
        r.field()?;
        for _ in 0..r.varint()? {
            r.string()?;
        }
    }
    let mut needs_more_fetch = false;
    if r.peek_field() == Some(3) {
        r.field()?;
        needs_more_fetch = r.take(1)?[0] != 0;
    }
    Ok(Prepared {
        needs_more_fetch,
        uuid: uuid_from_end(buf).map(<[u8]>::to_vec),
    })
}

/// The body ends `05 00 <signed varint> <varint> FF FF`. A varint's last byte is the only one
/// with the high bit clear, so both varints can be found walking backwards.
fn uuid_from_end(buf: &[u8]) -> Option<&[u8]> {
    let end = buf.len().checked_sub(2)?;
    if buf[end..] != END {
        return None;
    }
    let varint_start = |last: usize| -> Option<usize> {
        if buf.get(last)? & 0x80 != 0 {
            return None;
        }
        let mut start = last;
        while start > 0 && buf[start - 1] & 0x80 != 0 {
            start -= 1;
        }
        Some(start)
    };
    let lower = varint_start(end.checked_sub(1)?)?;
    let upper = varint_start(lower.checked_sub(1)?)?;
    (upper >= 2 && buf[upper - 2..upper] == [5, 0]).then(|| &buf[upper..end])
}

/// A FETCH_RESPONSE without results (field 1) is the last one.
pub fn fetch_is_last(buf: &[u8], h: &Header) -> bool {
    Reader {
        buf,
        pos: h.body_start,
    }
    .peek_field()
        != Some(1)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The captured DuckDB 1.5.5 messages the gateway's own codec tests use.
    fn fixture(name: &str) -> Vec<u8> {
        let dir = concat!(env!("CARGO_MANIFEST_DIR"), "/../../tests/data/quack");
        std::fs::read(format!("{dir}/{name}")).unwrap_or_else(|e| panic!("{dir}/{name}: {e}"))
    }

    const ID: &[u8] = b"A424FCD8ACB5D3BB949C46D82A8E0530";

    #[test]
    fn requests_match_the_captured_cli_bytes() {
        assert_eq!(
            prepare_request(ID, 7, "SELECT 42"),
            fixture("prepare_request_select42.bin")
        );
        assert_eq!(disconnect_request(ID), fixture("disconnect_request.bin"));
        // The captured FETCH carries its own result's uuid: rebuild it from that uuid.
        let captured = fixture("fetch_request.bin");
        // Header (43 bytes), then field 1 (`01 00`), the uuid, and `FF FF`.
        let uuid = &captured[45..captured.len() - 2];
        assert_eq!(fetch_request(ID, 14, uuid), captured);
    }

    #[test]
    fn parses_responses() {
        let resp = fixture("prepare_response_needs_fetch_12chunks.bin");
        let h = parse_header(&resp).unwrap();
        assert_eq!(h.ty, PREPARE_RESPONSE);
        let p = parse_prepare_response(&resp, &h).unwrap();
        assert!(p.needs_more_fetch);
        assert!(p.uuid.is_some());

        let resp = fixture("prepare_response_select42.bin");
        let h = parse_header(&resp).unwrap();
        let p = parse_prepare_response(&resp, &h).unwrap();
        assert!(!p.needs_more_fetch);
        // Two 10-byte varints: this uuid's upper and lower halves both use the full width.
        assert_eq!(p.uuid.unwrap().len(), 20);

        let resp = fixture("connection_response.bin");
        let h = parse_header(&resp).unwrap();
        assert_eq!(h.ty, CONNECTION_RESPONSE);
        assert_eq!(h.conn_id.unwrap(), ID);

        let resp = fixture("fetch_response_last_empty.bin");
        assert!(fetch_is_last(&resp, &parse_header(&resp).unwrap()));

        let resp = fixture("error_authentication_failed.bin");
        let h = parse_header(&resp).unwrap();
        assert_eq!(h.ty, ERROR_RESPONSE);
        assert_eq!(error_message(&resp, &h), "Authentication failed");
    }
}
