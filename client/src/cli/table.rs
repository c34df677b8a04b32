//! Aligned columns for `--output table`: a header row, then one row per
//! item, each column as wide as its widest cell, two spaces apart.
//!
//! A table must see its rows before it can size its columns, so it buffers
//! them; to keep `member list --all` on a huge org from holding every
//! member in memory, it prints after [`FLUSH_ROWS`] rows and keeps the
//! widths it chose then (a later, wider cell pushes only its own row).

use super::output::print_line;

/// Rows buffered before the widths are fixed and the table starts printing.
const FLUSH_ROWS: usize = 10_000;

/// The space between two columns.
const GAP: &str = "  ";

#[derive(Debug)]
pub struct Table {
    header: Vec<String>,
    rows: Vec<Vec<String>>,
    /// Set once the header has been printed; from then on every row is
    /// padded to these widths.
    widths: Option<Vec<usize>>,
}

impl Table {
    pub fn new(header: &[&str]) -> Self {
        Self {
            header: header.iter().map(|&name| name.to_owned()).collect(),
            rows: Vec::new(),
            widths: None,
        }
    }

    /// Adds a row (as many cells as the header has columns).
    pub fn push(&mut self, row: Vec<String>) {
        debug_assert_eq!(row.len(), self.header.len(), "{row:?}");
        self.rows
            .push(row.into_iter().map(|cell| one_line(&cell)).collect());
        if self.rows.len() >= FLUSH_ROWS {
            self.flush();
        }
    }

    /// Prints what is buffered (and the header, the first time).
    pub fn finish(mut self) {
        self.flush();
    }

    fn flush(&mut self) {
        for line in self.take_lines() {
            print_line(line);
        }
    }

    /// The lines not printed yet: the header first, the first time.
    pub fn take_lines(&mut self) -> Vec<String> {
        let mut lines = Vec::with_capacity(self.rows.len() + 1);
        let widths = match &self.widths {
            Some(widths) => widths.clone(),
            None => {
                let widths = column_widths(&self.header, &self.rows);
                lines.push(format_row(&self.header, &widths));
                self.widths = Some(widths.clone());
                widths
            }
        };
        lines.extend(self.rows.drain(..).map(|row| format_row(&row, &widths)));
        lines
    }
}

fn column_widths(header: &[String], rows: &[Vec<String>]) -> Vec<usize> {
    let mut widths: Vec<usize> = header.iter().map(|name| name.chars().count()).collect();
    for row in rows {
        for (width, cell) in widths.iter_mut().zip(row) {
            *width = (*width).max(cell.chars().count());
        }
    }
    widths
}

/// The cells padded to their column's width. Lines carry no trailing
/// spaces: the last cell is not padded, and an empty one leaves no gap.
fn format_row(cells: &[String], widths: &[usize]) -> String {
    let mut line = String::new();
    for (index, (cell, width)) in cells.iter().zip(widths).enumerate() {
        if index > 0 {
            line.push_str(GAP);
        }
        if index + 1 == cells.len() {
            line.push_str(cell);
        } else {
            line.push_str(&format!("{cell:<width$}"));
        }
    }
    line.truncate(line.trim_end().len());
    line
}

/// A cell on one line: a newline or tab (in an error message, say) would
/// break the row apart.
fn one_line(cell: &str) -> String {
    cell.chars()
        .map(|c| if c.is_control() { ' ' } else { c })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn columns_are_as_wide_as_their_widest_cell() {
        let mut table = Table::new(&["ID", "EMAIL"]);
        table.push(vec!["m1".into(), "m1@example.com".into()]);
        table.push(vec!["member-long".into(), String::new()]);
        assert_eq!(
            table.take_lines(),
            [
                "ID           EMAIL",
                "m1           m1@example.com",
                "member-long",
            ]
        );
    }

    #[test]
    fn widths_stay_fixed_after_the_first_flush() {
        let mut table = Table::new(&["A", "B"]);
        table.push(vec!["x".into(), "1".into()]);
        assert_eq!(table.take_lines(), ["A  B", "x  1"]);
        table.push(vec!["wider".into(), "2".into()]);
        assert_eq!(table.take_lines(), ["wider  2"]);
    }

    #[test]
    fn an_empty_table_is_its_header_and_cells_stay_on_one_line() {
        let mut table = Table::new(&["MEMBER", "MESSAGE"]);
        assert_eq!(table.take_lines(), ["MEMBER  MESSAGE"]);
        let mut table = Table::new(&["MEMBER", "MESSAGE"]);
        table.push(vec!["m1".into(), "line one\nline\ttwo".into()]);
        assert_eq!(table.take_lines()[1], "m1      line one line two");
    }
}
