//! Plain-text tables for people: columns padded to their widest cell, a header
//! line, no colour. Every command's summary goes through here so they all look alike.

/// Renders `rows` under `headers`, each column as wide as its widest cell.
pub fn render(headers: &[&str], rows: &[Vec<String>]) -> String {
    let mut widths: Vec<usize> = headers.iter().map(|h| h.len()).collect();
    for row in rows {
        for (width, cell) in widths.iter_mut().zip(row) {
            *width = (*width).max(cell.chars().count());
        }
    }
    let line = |cells: &mut dyn Iterator<Item = &str>| {
        let padded: Vec<String> = cells
            .zip(&widths)
            .map(|(cell, width)| format!("{cell:<width$}"))
            .collect();
        padded.join("  ").trim_end().to_owned() + "\n"
    };
    let mut out = line(&mut headers.iter().copied());
    for row in rows {
        out += &line(&mut row.iter().map(String::as_str));
    }
    out
}

#[cfg(test)]
mod tests {
    #[test]
    fn pads_columns_to_the_widest_cell() {
        let rows = vec![
            vec!["packer".to_owned(), "1.6.6".to_owned(), "ok".to_owned()],
            vec![
                "ansible-playbook".to_owned(),
                "".to_owned(),
                "missing".to_owned(),
            ],
        ];
        expect_test::expect![[r#"
            tool              version  status
            packer            1.6.6    ok
            ansible-playbook           missing
        "#]]
        .assert_eq(&super::render(&["tool", "version", "status"], &rows));
    }
}
