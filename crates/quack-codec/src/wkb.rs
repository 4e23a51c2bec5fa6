//! Whether a GEOMETRY value of an APPEND is one that DuckDB 1.5.5 could have made itself: one
//! geometry in its internal WKB (little-endian, the type `base + 1000·Z + 2000·M`), every count
//! backed by the bytes that follow, and nothing left over. DuckDB stores an appended value as
//! it comes and trusts its counts later: a review's MULTIPOINT of 2³² − 1 points ended a plain
//! server's database when a CHECKPOINT split its row group.

/// DuckDB's `Geometry::MAX_RECURSION_DEPTH`.
const MAX_DEPTH: usize = 16;

/// Whether `value` is one whole geometry.
pub(crate) fn is_geometry(value: &[u8]) -> bool {
    let mut at = 0;
    geometry(value, &mut at, None, 0).is_some() && at == value.len()
}

/// The bytes a `u32` count of items of `each` bytes needs, if they are there.
fn take<'a>(value: &'a [u8], at: &mut usize, n: usize) -> Option<&'a [u8]> {
    let bytes = value.get(*at..at.checked_add(n)?)?;
    *at += n;
    Some(bytes)
}

fn count(value: &[u8], at: &mut usize) -> Option<usize> {
    let bytes = take(value, at, 4)?;
    usize::try_from(u32::from_le_bytes([bytes[0], bytes[1], bytes[2], bytes[3]])).ok()
}

/// One geometry from `at`, whose type is `within` its collection's (base type for the parts of
/// a MULTI type, and the same Z and M), when it is a part.
fn geometry(value: &[u8], at: &mut usize, within: Option<(u32, u32)>, depth: usize) -> Option<()> {
    if depth > MAX_DEPTH || take(value, at, 1)? != [1] {
        return None;
    }
    let meta = count(value, at)?;
    let (base, dims) = ((meta % 1000) as u32, (meta / 1000) as u32);
    if !(1..=7).contains(&base) || dims > 3 {
        return None;
    }
    if let Some((part_base, part_dims)) = within {
        if dims != part_dims || (part_base != 0 && base != part_base) {
            return None;
        }
    }
    let vertex = (2 + (dims & 1) + (dims >> 1)) as usize * 8;
    let vertices = |at: &mut usize| -> Option<()> {
        let n = count(value, at)?;
        take(value, at, n.checked_mul(vertex)?).map(|_| ())
    };
    match base {
        1 => take(value, at, vertex).map(|_| ()),
        2 => vertices(at),
        3 => {
            for _ in 0..count(value, at)? {
                vertices(at)?;
            }
            Some(())
        }
        _ => {
            // MULTIPOINT, MULTILINESTRING, MULTIPOLYGON of their base type; a collection of any.
            let part = if base == 7 { 0 } else { base - 3 };
            let parts = count(value, at)?;
            // Each part is at least a byte order and a type.
            if parts > (value.len() - *at) / 5 {
                return None;
            }
            for _ in 0..parts {
                geometry(value, at, Some((part, dims)), depth + 1)?;
            }
            Some(())
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn point(dims: u32, xy: [f64; 2]) -> Vec<u8> {
        let mut v = vec![1];
        v.extend_from_slice(&(1 + 1000 * dims).to_le_bytes());
        for c in xy
            .iter()
            .chain(&[0.0; 2][..((dims & 1) + (dims >> 1)) as usize])
        {
            v.extend_from_slice(&c.to_le_bytes());
        }
        v
    }

    fn multi(base: u32, dims: u32, parts: &[Vec<u8>], said: u32) -> Vec<u8> {
        let mut v = vec![1];
        v.extend_from_slice(&(base + 1000 * dims).to_le_bytes());
        v.extend_from_slice(&said.to_le_bytes());
        parts.iter().for_each(|p| v.extend_from_slice(p));
        v
    }

    #[test]
    fn a_geometry_passes_only_whole_and_as_duckdb_writes_it() {
        let p = point(0, [1.0, 2.0]);
        assert!(is_geometry(&p));
        assert!(is_geometry(&point(3, [1.0, 2.0])));
        let two = [p.clone(), p.clone()];
        assert!(is_geometry(&multi(4, 0, &two, 2)));
        assert!(is_geometry(&multi(
            7,
            0,
            &[multi(4, 0, &two, 2), p.clone()],
            2
        )));
        assert!(is_geometry(&multi(4, 0, &[], 0)), "an empty MULTIPOINT");
        // A review's: more parts than the bytes hold.
        assert!(!is_geometry(&multi(4, 0, &[], u32::MAX)));
        assert!(!is_geometry(&multi(4, 0, &two, 3)));
        assert!(!is_geometry(&multi(4, 0, &two, 1)), "a point left over");
        assert!(
            !is_geometry(&multi(4, 0, &[point(1, [1.0, 2.0])], 1)),
            "a Z point in 2D"
        );
        assert!(
            !is_geometry(&multi(5, 0, std::slice::from_ref(&p), 1)),
            "a point as a line"
        );
        let mut line = vec![1, 2, 0, 0, 0];
        line.extend_from_slice(&2u32.to_le_bytes());
        line.extend_from_slice(&[0; 32]);
        assert!(is_geometry(&line));
        assert!(!is_geometry(&line[..line.len() - 1]));
        line[5] = 0xFF;
        assert!(!is_geometry(&line), "more vertices than bytes");
        let mut polygon = vec![1, 3, 0, 0, 0, 1, 0, 0, 0, 1, 0, 0, 0];
        polygon.extend_from_slice(&[0; 16]);
        assert!(is_geometry(&polygon));
        for wrong in [
            vec![0, 1, 0, 0, 0],       // big-endian: DuckDB stores little-endian only
            vec![1, 8, 0, 0, 0],       // no such type
            vec![1, 0xA1, 0x0F, 0, 0], // 4001: no such dimensions
            vec![1, 1, 0, 0, 0x20],    // an EWKB SRID flag
            vec![],
        ] {
            let mut v = wrong.clone();
            v.extend_from_slice(&[0; 16]);
            assert!(!is_geometry(&v), "{wrong:?}");
        }
        let mut deep = p;
        for _ in 0..20 {
            deep = multi(7, 0, &[deep], 1);
        }
        assert!(!is_geometry(&deep));
    }
}
