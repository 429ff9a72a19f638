//! Media to upload: real PNG images (RGB noise, so they do not compress and their size is
//! what was asked for) that Synapse's thumbnailer decodes like any photo.

use std::io::Write as _;

use flate2::{Compression, Crc, write::ZlibEncoder};

/// A PNG of random pixels whose file is about `target` bytes (within a row).
pub fn noise_png(rng: &mut fastrand::Rng, target: usize) -> (Vec<u8>, u32, u32) {
    let (w, h) = dimensions(target);
    let mut raw = Vec::with_capacity((w as usize * 3 + 1) * h as usize);
    for _ in 0..h {
        raw.push(0); // filter: none
        raw.extend(std::iter::repeat_with(|| rng.u8(..)).take(w as usize * 3));
    }
    let mut z = ZlibEncoder::new(Vec::new(), Compression::fast());
    z.write_all(&raw).expect("writing to memory");
    let idat = z.finish().expect("writing to memory");
    let mut png = b"\x89PNG\r\n\x1a\n".to_vec();
    let mut ihdr = Vec::with_capacity(13);
    ihdr.extend(w.to_be_bytes());
    ihdr.extend(h.to_be_bytes());
    ihdr.extend([8, 2, 0, 0, 0]); // 8-bit RGB, deflate, no filter method, no interlace
    chunk(&mut png, *b"IHDR", &ihdr);
    chunk(&mut png, *b"IDAT", &idat);
    chunk(&mut png, *b"IEND", &[]);
    (png, w, h)
}

/// Width and height (4:3) of an RGB image whose raw rows take about `target` bytes.
fn dimensions(target: usize) -> (u32, u32) {
    let pixels = (target / 3).max(16 * 12);
    let w = ((pixels as f64 * 4.0 / 3.0).sqrt() as u32).max(16);
    let h = ((target as u32).saturating_sub(64) / (3 * w + 1)).max(1);
    (w, h)
}

fn chunk(out: &mut Vec<u8>, kind: [u8; 4], data: &[u8]) {
    out.extend((data.len() as u32).to_be_bytes());
    let mut crc = Crc::new();
    crc.update(&kind);
    crc.update(data);
    out.extend(kind);
    out.extend(data);
    out.extend(crc.sum().to_be_bytes());
}

/// `count` sizes spread log-uniformly over `[min, max]` (many small pictures, few large).
pub fn sizes(rng: &mut fastrand::Rng, count: usize, min: usize, max: usize) -> Vec<usize> {
    let (lo, hi) = ((min.max(1) as f64).ln(), (max.max(min).max(1) as f64).ln());
    (0..count)
        .map(|_| (lo + rng.f64() * (hi - lo)).exp() as usize)
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn png_is_well_formed_and_near_the_target_size() {
        let mut rng = fastrand::Rng::with_seed(7);
        for target in [50_000, 700_000, 2_000_000] {
            let (png, w, h) = noise_png(&mut rng, target);
            assert_eq!(&png[..8], b"\x89PNG\r\n\x1a\n");
            assert_eq!(&png[12..16], b"IHDR");
            assert_eq!(u32::from_be_bytes(png[16..20].try_into().unwrap()), w);
            assert_eq!(u32::from_be_bytes(png[20..24].try_into().unwrap()), h);
            let mut crc = Crc::new();
            crc.update(&png[12..29]);
            assert_eq!(crc.sum().to_be_bytes(), png[29..33], "IHDR CRC");
            assert!(png.ends_with(&[0, 0, 0, 0, b'I', b'E', b'N', b'D', 0xae, 0x42, 0x60, 0x82]));
            let ratio = png.len() as f64 / target as f64;
            assert!(
                (0.97..1.03).contains(&ratio),
                "{target}: {} bytes",
                png.len()
            );
        }
    }

    #[test]
    fn sizes_stay_in_range() {
        let mut rng = fastrand::Rng::with_seed(1);
        let s = sizes(&mut rng, 500, 50_000, 2_000_000);
        assert_eq!(s.len(), 500);
        assert!(s.iter().all(|&n| (50_000..=2_000_000).contains(&n)));
        let small = s.iter().filter(|&&n| n < 316_000).count();
        assert!(
            (200..300).contains(&small),
            "about half below the geometric mean: {small}"
        );
    }
}
