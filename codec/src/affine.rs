//! Whether a voxel-to-world affine can place voxels: the one rule the edge's readers (NIfTI,
//! DICOM) and the cloud's volume-stream reader apply, so that a scan refused on one side is
//! refused on the other.

/// Why an affine (rows of the 3 x 4 matrix; columns i = x, j = y, k = z, then the offset)
/// cannot place voxels, or None.
#[derive(Clone, Debug, PartialEq)]
pub struct AffineProblem {
    pub reason: &'static str,
    /// What was found (the entry, the axis or the determinant).
    pub found: String,
}

/// The voxel axes must span 3D: the matrix's volume against the product of its axes'
/// lengths (1 for perpendicular axes, 0 for parallel ones). Below this the axes are parallel
/// up to the rounding of a file's numbers: no real scan is sheared that far.
const MIN_ORTHOGONALITY: f64 = 1e-3;

/// The shortest voxel axis, in mm: a nanometre is no spacing.
pub const MIN_SPACING_MM: f64 = 1e-6;

pub fn affine_problem(affine: &[[f32; 4]; 3]) -> Option<AffineProblem> {
    for (r, row) in affine.iter().enumerate() {
        for (c, v) in row.iter().enumerate() {
            if !v.is_finite() {
                return Some(AffineProblem {
                    reason: "every entry must be a finite number",
                    found: format!("row {r}, column {c} is {v}"),
                });
            }
        }
    }
    let column = |j: usize| [0, 1, 2].map(|i| affine[i][j] as f64);
    let (x, y, z) = (column(0), column(1), column(2));
    let length = |v: [f64; 3]| v.iter().map(|a| a * a).sum::<f64>().sqrt();
    for (axis, v) in [("x", x), ("y", y), ("z", z)] {
        if length(v) < MIN_SPACING_MM {
            return Some(AffineProblem {
                reason: "a voxel axis has no length (zero spacing)",
                found: format!("axis {axis} is {v:?}"),
            });
        }
    }
    let det = x[0] * (y[1] * z[2] - y[2] * z[1]) - x[1] * (y[0] * z[2] - y[2] * z[0])
        + x[2] * (y[0] * z[1] - y[1] * z[0]);
    let orthogonality = det.abs() / (length(x) * length(y) * length(z));
    if orthogonality < MIN_ORTHOGONALITY {
        return Some(AffineProblem {
            reason: "the voxel axes do not span 3D (a singular matrix)",
            found: format!("determinant {det:e}"),
        });
    }
    None
}

/// The rotation of NIfTI's qform quaternion (b, c, d; a = sqrt(1 - b^2 - c^2 - d^2), taken as 0
/// with (b, c, d) normalised when rounding pushes them past unit length, as the standard's
/// reference code does). Rows are world axes, columns voxel axes.
pub fn quaternion_rotation(b: f64, c: f64, d: f64) -> [[f64; 3]; 3] {
    let sum = b * b + c * c + d * d;
    let (a, b, c, d) = if sum > 1.0 {
        let n = sum.sqrt();
        (0.0, b / n, c / n, d / n)
    } else {
        ((1.0 - sum).sqrt(), b, c, d)
    };
    [
        [
            a * a + b * b - c * c - d * d,
            2.0 * (b * c - a * d),
            2.0 * (b * d + a * c),
        ],
        [
            2.0 * (b * c + a * d),
            a * a + c * c - b * b - d * d,
            2.0 * (c * d - a * b),
        ],
        [
            2.0 * (b * d - a * c),
            2.0 * (c * d + a * b),
            a * a + d * d - c * c - b * b,
        ],
    ]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn real_scans_pass_and_impossible_ones_are_named() {
        // ACDC-like: LPS turned RAS, oblique, 1.5 x 1.5 x 10 mm.
        let oblique = [
            [-1.2, 0.3, 5.0, 100.0],
            [0.4, -1.4, 2.0, 80.0],
            [0.1, 0.5, 8.5, -20.0],
        ];
        assert_eq!(affine_problem(&oblique), None);
        let mirrored = [[-0.7, 0.0, 0.0, 1.0], [0.0, 0.8, 0.0, 2.0], [0.0, 0.0, -2.5, 3.0]];
        assert_eq!(affine_problem(&mirrored), None);
        let cases: [([[f32; 4]; 3], &str); 4] = [
            ([[0.0; 4]; 3], "no length"),
            (
                [[1.0, 0.0, 0.0, 0.0], [0.0, 0.0, 0.0, 0.0], [0.0, 0.0, 2.0, 0.0]],
                "axis y",
            ),
            (
                [[1.0, 1.0, 0.0, 0.0], [0.0, 0.0, 0.0, 0.0], [0.0, 0.0, 2.0, 0.0]],
                "singular",
            ),
            (
                [
                    [1.0, 0.0, 0.0, f32::NAN],
                    [0.0, 1.0, 0.0, 0.0],
                    [0.0, 0.0, 1.0, 0.0],
                ],
                "row 0, column 3",
            ),
        ];
        for (affine, needle) in cases {
            let p = affine_problem(&affine).expect("refused");
            assert!(
                format!("{}: {}", p.reason, p.found).contains(needle),
                "{needle}: {p:?}"
            );
        }
    }
}
