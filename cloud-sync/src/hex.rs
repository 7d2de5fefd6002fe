//! Lowercase hexadecimal, the only spelling of hashes and keys in the batch
//! format (`docs/batch-format.md` §2): one byte is two digits `0-9a-f`.

/// Encode bytes as lowercase hex.
pub fn encode(bytes: &[u8]) -> String {
    const DIGITS: &[u8; 16] = b"0123456789abcdef";
    let mut s = String::with_capacity(bytes.len() * 2);
    for b in bytes {
        s.push(char::from(DIGITS[usize::from(b >> 4)]));
        s.push(char::from(DIGITS[usize::from(b & 0x0f)]));
    }
    s
}

/// Decode exactly `N` bytes from lowercase hex; `None` for any other length,
/// an uppercase digit or a non-hex character.
pub fn decode<const N: usize>(s: &str) -> Option<[u8; N]> {
    let b = s.as_bytes();
    if b.len() != 2 * N {
        return None;
    }
    let digit = |c: u8| match c {
        b'0'..=b'9' => Some(c - b'0'),
        b'a'..=b'f' => Some(c - b'a' + 10),
        _ => None,
    };
    let mut out = [0u8; N];
    for (i, o) in out.iter_mut().enumerate() {
        *o = (digit(b[2 * i])? << 4) | digit(b[2 * i + 1])?;
    }
    Some(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trips_and_is_strict() {
        assert_eq!(encode(&[0x00, 0xab, 0xff]), "00abff");
        assert_eq!(decode::<3>("00abff"), Some([0x00, 0xab, 0xff]));
        assert_eq!(decode::<3>("00ABFF"), None, "uppercase is not canonical");
        assert_eq!(decode::<3>("00abf"), None);
        assert_eq!(decode::<2>("00abff"), None);
        assert_eq!(decode::<1>("g0"), None);
    }
}
