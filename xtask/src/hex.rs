//! Bytes as lower-case hexadecimal, the way digests are written in DIGESTS files,
//! SHA256SUMS and our own records and cache keys.

/// `bytes` as lower-case hex, two digits a byte.
pub fn encode(bytes: &[u8]) -> String {
    const DIGITS: &[u8; 16] = b"0123456789abcdef";
    let mut text = String::with_capacity(bytes.len() * 2);
    for byte in bytes {
        text.push(char::from(DIGITS[usize::from(byte >> 4)]));
        text.push(char::from(DIGITS[usize::from(byte & 0x0f)]));
    }
    text
}

#[cfg(test)]
mod tests {
    #[test]
    fn lower_case_two_digits_a_byte() {
        assert_eq!(super::encode(&[0x00, 0x0a, 0xab, 0xff]), "000aabff");
        assert_eq!(super::encode(&[]), "");
    }
}
