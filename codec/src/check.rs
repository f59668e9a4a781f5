//! The stream's check value: CRC-8 with the polynomial x^8 + x^2 + x + 1 (0x07, as SMBus uses)
//! over the header and the payload. The polynomial has the factor x + 1, so every error that
//! flips an odd number of bits is caught, as is every burst of up to 8 bits (every single flipped
//! bit or byte); any other damage, a truncation included, is caught with probability 255/256.
//! It is checked before the payload is decoded, so a damaged stream costs no decoding work.

const POLY: u8 = 0x07;

/// The check value of `parts`, read in order as one byte string.
pub fn crc8<'a>(parts: impl IntoIterator<Item = &'a [u8]>) -> u8 {
    let mut crc = 0u8;
    for part in parts {
        for &byte in part {
            crc ^= byte;
            for _ in 0..8 {
                crc = if crc & 0x80 != 0 {
                    (crc << 1) ^ POLY
                } else {
                    crc << 1
                };
            }
        }
    }
    crc
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_standard_check_value() {
        // CRC-8/SMBUS of "123456789" is 0xF4.
        assert_eq!(crc8([b"123456789".as_slice()]), 0xf4);
        assert_eq!(crc8([b"1234".as_slice(), b"56789".as_slice()]), 0xf4);
    }

    #[test]
    fn every_single_bit_flip_and_byte_burst_is_caught() {
        let data: Vec<u8> = (0..40u8).map(|i| i.wrapping_mul(37) ^ 0x5a).collect();
        let good = crc8([data.as_slice()]);
        for i in 0..data.len() {
            for bit in 0..8 {
                let mut d = data.clone();
                d[i] ^= 1 << bit;
                assert_ne!(crc8([d.as_slice()]), good, "bit {bit} of byte {i}");
            }
            for value in 1..=255u8 {
                let mut d = data.clone();
                d[i] ^= value;
                assert_ne!(crc8([d.as_slice()]), good, "byte {i} xor {value:#04x}");
            }
        }
    }
}
