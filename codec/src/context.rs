//! The bit model's contexts computed bit by bit, in coding order, without tensors: what the
//! decoder can know before each bit. Must agree exactly with `BitModel::contexts` (tested).

/// Shape of a code: K channels and the spatial sides (2 or 3 of them).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CodeShape {
    pub channels: usize,
    pub sides: Vec<usize>,
}

impl CodeShape {
    pub fn bits(&self) -> usize {
        self.channels * self.sides.iter().product::<usize>()
    }

    fn spatial(&self) -> usize {
        self.sides.iter().product()
    }
}

/// Neighbour state: absent 1, -1 -> 0, +1 -> 2 (as in the tensor version).
#[inline]
fn state(bits: &[i8], index: Option<usize>) -> usize {
    match index {
        None => 1,
        Some(i) => (bits[i] + 1) as usize,
    }
}

/// Context index of bit `i` (coding order: channel-major, then raster) given the bits before
/// it. Only `bits[..i]` is read.
pub fn context(shape: &CodeShape, bits: &[i8], i: usize) -> usize {
    let plane = shape.spatial();
    let (k, pos) = (i / plane, i % plane);
    let last = *shape.sides.last().expect("at least one spatial side");
    let x = pos % last;
    let rest = pos / last;
    let index = |cond: bool, offset: usize| cond.then(|| i - offset);
    let left = index(x > 0, 1);
    match shape.sides.len() {
        2 => {
            let y = rest;
            let up = index(y > 0, last);
            let diag = index(y > 0 && x > 0, last + 1);
            let prev = index(k > 0, plane);
            state(bits, left) + 3 * state(bits, up) + 9 * state(bits, diag) + 27 * state(bits, prev)
        }
        _ => {
            let rows = shape.sides[1];
            let (z, y) = (rest / rows, rest % rows);
            let up = index(y > 0, last);
            let front = index(z > 0, last * rows);
            let prev = index(k > 0, plane);
            state(bits, left) + 3 * state(bits, up) + 9 * state(bits, front) + 27 * state(bits, prev)
        }
    }
}
