//! The latency tables' one Markdown layout: a header row, a separator with one `---` per
//! column, then one row per method, every cell padded by a space on each side.

/// `header` and `rows` (each as many cells as the header) as a Markdown table.
pub fn table(header: &[String], rows: &[Vec<String>]) -> String {
    let line = |cells: &[String]| -> String {
        let mut s = String::from("|");
        for c in cells {
            s += &format!(" {c} |");
        }
        s + "\n"
    };
    let mut s = line(header);
    s += &"|---".repeat(header.len());
    s += "|\n";
    for r in rows {
        debug_assert_eq!(r.len(), header.len(), "a row of the table has another width");
        s += &line(r);
    }
    s
}

/// `columns` (the last one the CPU total) with the GPU's columns where a GPU ran: its
/// segmentation before the CPU total, its total at the end.
pub fn with_gpu(mut columns: Vec<String>, gpu_columns: [Option<String>; 2]) -> Vec<String> {
    let [segment, total] = gpu_columns;
    let n = columns.len();
    if let Some(t) = total {
        columns.push(t);
    }
    if let Some(s) = segment {
        columns.insert(n - 1, s);
    }
    columns
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn header_separator_and_rows_have_one_cell_per_column() {
        let t = table(
            &["a".into(), "b c".into()],
            &[vec!["1".into(), "2".into()], vec!["x".into(), "-".into()]],
        );
        assert_eq!(t, "| a | b c |\n|---|---|\n| 1 | 2 |\n| x | - |\n");
    }

    #[test]
    fn gpu_columns_go_after_the_cpu_segmentation_and_at_the_end() {
        let cols = |v: &[&str]| v.iter().map(|s| s.to_string()).collect::<Vec<_>>();
        assert_eq!(
            with_gpu(
                cols(&["m", "seg cpu", "total cpu"]),
                [Some("seg gpu".into()), Some("total gpu".into())]
            ),
            cols(&["m", "seg cpu", "seg gpu", "total cpu", "total gpu"])
        );
        assert_eq!(
            with_gpu(cols(&["m", "seg cpu", "total cpu"]), [None, None]),
            cols(&["m", "seg cpu", "total cpu"])
        );
    }
}
