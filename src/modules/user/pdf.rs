//! PDF rendering of one shopper session: a title page, the journey as a
//! top-to-bottom flow chart (one box per step, arrows between them) spread over
//! as many pages as needed, and a summary page.
//!
//! The journey is drawn as a schematic of plain PDF paths (rectangles, lines,
//! arrowheads) with absolutely positioned text rather than through a layout
//! engine: it stays fast and predictable for sessions with thousands of steps,
//! and each box's text lines come out in step order for text extraction.
//!
//! Text uses the standard PDF fonts Helvetica and Helvetica-Bold, so there is
//! no font file to ship or embed and the text stays real, extractable text.
//! Those fonts only cover WinAnsi (about Latin-1), so other characters are
//! mapped to a close ASCII spelling or replaced by `?`, and text is measured
//! with the fonts' published metrics to truncate it to its box.

use chrono::{DateTime, Utc};
use printpdf::{
    BuiltinFont, Color, Line, LinePoint, Mm, Op, PaintMode, PdfDocument, PdfFontHandle, PdfPage,
    PdfParseErrorSeverity, PdfSaveOptions, Point, Polygon, PolygonRing, Pt, Rect, Rgb, TextItem,
    WindingOrder,
};

/// What a step was, for its box colour/highlight.
pub use crate::contracts::journey::StepKind;

#[derive(Debug, Clone)]
pub struct Step {
    /// Milliseconds since the Unix epoch.
    pub at_ms: i64,
    pub kind: StepKind,
    /// Short label, e.g. "Catalog" or "Add to cart".
    pub label: String,
    /// Optional second line, e.g. "/products/abc" or "Masala Chai ×2".
    pub detail: Option<String>,
}

/// What the journey adds up to: the same totals the API shows.
pub use super::journey::JourneyTotals as Summary;

#[derive(Debug, Clone)]
pub struct JourneyDoc {
    pub shopper_name: String,
    pub shopper_email: String,
    pub session_id: String,
    pub started_at_ms: i64,
    pub ended_at_ms: i64,
    pub steps: Vec<Step>,
    pub summary: Summary,
}

/// Renders the journey; errors only if printpdf fails to serialize. A run of the same step
/// (a page reloaded, a button pressed again) is drawn once, marked "×N".
pub fn render(doc: &JourneyDoc) -> Result<Vec<u8>, String> {
    let doc = &JourneyDoc {
        steps: collapsed(&doc.steps),
        ..doc.clone()
    };
    let journey_pages = doc.steps.len().div_ceil(STEPS_PER_PAGE);
    let total = journey_pages + 2;

    let mut pages = Vec::with_capacity(total);
    pages.push(title_page(doc, total));
    for (i, chunk) in doc.steps.chunks(STEPS_PER_PAGE).enumerate() {
        pages.push(journey_page(doc, i, chunk, total));
    }
    pages.push(summary_page(doc, total));

    let mut warnings = Vec::new();
    let bytes = PdfDocument::new("Ekart shopper journey")
        .with_pages(pages)
        .save(&PdfSaveOptions::default(), &mut warnings);
    let errors: Vec<String> = warnings
        .into_iter()
        .filter(|w| w.severity == PdfParseErrorSeverity::Error)
        .map(|w| w.msg)
        .collect();
    if errors.is_empty() {
        Ok(bytes)
    } else {
        Err(format!("printpdf: {}", errors.join("; ")))
    }
}

// Layout, in PDF points (origin bottom-left) on an A4 page.
const PAGE_W: f32 = 595.28;
const MARGIN: f32 = 56.0;
const BOX_X: f32 = 70.0;
const BOX_W: f32 = 455.0;
const BOX_H: f32 = 44.0;
/// Vertical gap between boxes, where the arrow goes.
const GAP: f32 = 26.0;
const FIRST_TOP: f32 = 762.0;
/// Ten boxes fit between the page header and the continuation arrow.
const STEPS_PER_PAGE: usize = 10;

/// `steps` with each run of the same step (kind, label and detail) as its first, its label
/// marked with how many there were: what happened, not how often the browser said so.
fn collapsed(steps: &[Step]) -> Vec<Step> {
    let mut runs: Vec<(Step, usize)> = Vec::with_capacity(steps.len());
    for step in steps {
        match runs.last_mut() {
            Some((first, n))
                if first.kind == step.kind
                    && first.label == step.label
                    && first.detail == step.detail =>
            {
                *n += 1
            }
            _ => runs.push((step.clone(), 1)),
        }
    }
    runs.into_iter()
        .map(|(mut step, n)| {
            if n > 1 {
                step.label = format!("{} ×{n}", step.label);
            }
            step
        })
        .collect()
}
const PAD: f32 = 10.0;

type Rgb3 = (f32, f32, f32);
/// Fill colour, outline colour and outline width.
type BoxStyle = (Rgb3, Rgb3, f32);
const BLACK: Rgb3 = (0.1, 0.1, 0.12);
const GREY: Rgb3 = (0.38, 0.4, 0.45);
const ARROW: Rgb3 = (0.35, 0.37, 0.42);

const REGULAR: BuiltinFont = BuiltinFont::Helvetica;
const BOLD: BuiltinFont = BuiltinFont::HelveticaBold;

/// How a step box is painted; the shopping milestones get saturated fills and
/// thicker outlines so they stand out.
fn style(kind: StepKind) -> BoxStyle {
    match kind {
        StepKind::Page => ((0.97, 0.97, 0.98), (0.55, 0.58, 0.63), 0.75),
        StepKind::Action => ((0.91, 0.95, 1.0), (0.35, 0.5, 0.8), 0.75),
        StepKind::Cart => ((1.0, 0.9, 0.65), (0.85, 0.58, 0.05), 1.5),
        StepKind::Checkout => ((0.88, 0.84, 1.0), (0.48, 0.33, 0.8), 1.5),
        StepKind::OrderCompleted => ((0.78, 0.94, 0.78), (0.13, 0.58, 0.25), 1.5),
        StepKind::OrderFailed => ((1.0, 0.8, 0.78), (0.8, 0.18, 0.18), 1.5),
    }
}

fn title_page(doc: &JourneyDoc, total: usize) -> PdfPage {
    let mut c = Canvas::default();
    c.text(BOLD, 24.0, MARGIN, 770.0, BLACK, "Ekart — shopper journey");

    let started = format_utc(doc.started_at_ms);
    let ended = format_utc(doc.ended_at_ms);
    let length = format_duration(doc.ended_at_ms - doc.started_at_ms);
    let steps = doc.steps.len().to_string();
    let rows = [
        ("Shopper", doc.shopper_name.as_str()),
        ("Email", &doc.shopper_email),
        ("Session", &doc.session_id),
        ("Started", &started),
        ("Ended", &ended),
        ("Length", &length),
        ("Steps", &steps),
    ];
    key_values(&mut c, 720.0, &rows);

    c.text(BOLD, 13.0, MARGIN, 520.0, BLACK, "Legend");
    let legend = [
        (StepKind::Page, "Page view"),
        (StepKind::Action, "Action"),
        (StepKind::Cart, "Cart"),
        (StepKind::Checkout, "Checkout"),
        (StepKind::OrderCompleted, "Order completed"),
        (StepKind::OrderFailed, "Order failed"),
    ];
    for (i, (kind, name)) in legend.into_iter().enumerate() {
        let y = 496.0 - 20.0 * i as f32;
        c.rect(MARGIN, y - 3.0, 22.0, 12.0, style(kind));
        c.text(REGULAR, 10.0, MARGIN + 32.0, y, BLACK, name);
    }
    c.text(
        REGULAR,
        9.0,
        MARGIN,
        350.0,
        GREY,
        "Each box is one step, in order; \"stayed\" is the time until the next step.",
    );
    footer(&mut c, doc, 1, total);
    c.page()
}

fn summary_page(doc: &JourneyDoc, total: usize) -> PdfPage {
    let s = &doc.summary;
    let mut c = Canvas::default();
    c.text(BOLD, 20.0, MARGIN, 770.0, BLACK, "Summary");
    let spent = match &s.currency {
        Some(currency) => format_money(s.spent_minor, currency),
        None => "nothing spent".to_owned(),
    };
    let rows = [
        ("Pages visited", s.pages_visited.to_string()),
        ("Items added", s.items_added.to_string()),
        ("Orders placed", s.orders_placed.to_string()),
        ("Orders completed", s.orders_completed.to_string()),
        ("Money spent", spent),
    ];
    let rows = rows.each_ref().map(|(k, v)| (*k, v.as_str()));
    key_values(&mut c, 730.0, &rows);
    footer(&mut c, doc, total, total);
    c.page()
}

/// One page of the flow chart: `chunk` is the `index`-th run of steps.
fn journey_page(doc: &JourneyDoc, index: usize, chunk: &[Step], total: usize) -> PdfPage {
    let mut c = Canvas::default();
    let first = index * STEPS_PER_PAGE;
    let last = first + chunk.len();
    let page_no = index + 2;
    let centre = BOX_X + BOX_W / 2.0;
    // Labels start in one column, right of the widest step number.
    let widest = format!("#{}", doc.steps.len());
    let text_x = BOX_X + PAD + text_width(&widest, BOLD, 10.0) + 8.0;

    c.text(BOLD, 16.0, MARGIN, 806.0, BLACK, "Journey");
    let range = format!("steps {}-{} of {}", first + 1, last, doc.steps.len());
    c.text_right(REGULAR, 9.0, PAGE_W - MARGIN, 806.0, GREY, &range);

    if index > 0 {
        c.arrow(centre, 790.0, FIRST_TOP);
        let from = format!("from #{first} on page {}", page_no - 1);
        c.text(REGULAR, 8.0, centre + 8.0, 774.0, GREY, &from);
    }

    for (slot, step) in chunk.iter().enumerate() {
        let n = first + slot;
        let top = FIRST_TOP - slot as f32 * (BOX_H + GAP);
        let prev = n.checked_sub(1).map(|p| doc.steps[p].at_ms);
        // The date is repeated on each page's first box and whenever it changes.
        let with_date = slot == 0 || prev.map(date_of) != Some(date_of(step.at_ms));
        let stay = match doc.steps.get(n + 1) {
            Some(next) => stayed(next.at_ms - step.at_ms),
            None if doc.ended_at_ms >= step.at_ms => {
                format!("{}, until end", stayed(doc.ended_at_ms - step.at_ms))
            }
            None => "—".to_owned(),
        };
        let time = clock(step.at_ms, with_date);
        step_box(&mut c, n + 1, step, top, text_x, &time, &stay);

        let bottom = top - BOX_H;
        if slot + 1 < chunk.len() {
            c.arrow(centre, bottom, bottom - GAP);
        } else if last < doc.steps.len() {
            c.arrow(centre, bottom, 62.0);
            let to = format!("continued on page {}", page_no + 1);
            c.text(REGULAR, 8.0, centre + 8.0, 70.0, GREY, &to);
        }
    }
    footer(&mut c, doc, page_no, total);
    c.page()
}

/// A step box: "#n  label  time" on the first line, "detail  stayed" below,
/// with label and detail starting at `text_x`.
fn step_box(
    c: &mut Canvas,
    number: usize,
    step: &Step,
    top: f32,
    text_x: f32,
    time: &str,
    stay: &str,
) {
    c.rect(BOX_X, top - BOX_H, BOX_W, BOX_H, style(step.kind));

    let right = BOX_X + BOX_W - PAD;
    let line1 = top - 17.0;
    let line2 = top - 33.0;
    c.text(BOLD, 10.0, BOX_X + PAD, line1, GREY, &format!("#{number}"));

    let time_x = c.text_right(REGULAR, 9.0, right, line1, GREY, time);
    let label = fit(&step.label, BOLD, 11.0, time_x - 12.0 - text_x);
    c.text(BOLD, 11.0, text_x, line1, BLACK, &label);

    let stay_x = c.text_right(REGULAR, 9.0, right, line2, GREY, stay);
    if let Some(detail) = &step.detail {
        let detail = fit(detail, REGULAR, 9.0, stay_x - 12.0 - text_x);
        c.text(REGULAR, 9.0, text_x, line2, GREY, &detail);
    }
}

/// Bold keys in one column, values (fitted to the page) in the next.
fn key_values(c: &mut Canvas, top: f32, rows: &[(&str, &str)]) {
    let value_x = MARGIN + 120.0;
    for (i, (key, value)) in rows.iter().enumerate() {
        let y = top - 22.0 * i as f32;
        c.text(BOLD, 11.0, MARGIN, y, BLACK, key);
        let value = fit(value, REGULAR, 11.0, PAGE_W - MARGIN - value_x);
        c.text(REGULAR, 11.0, value_x, y, BLACK, &value);
    }
}

fn footer(c: &mut Canvas, doc: &JourneyDoc, page: usize, total: usize) {
    let session = fit(&format!("session {}", doc.session_id), REGULAR, 8.0, 360.0);
    c.text(REGULAR, 8.0, MARGIN, 30.0, GREY, &session);
    let page = format!("page {page} of {total}");
    c.text_right(REGULAR, 8.0, PAGE_W - MARGIN, 30.0, GREY, &page);
}

/// The operations of one page under construction.
#[derive(Default)]
struct Canvas {
    ops: Vec<Op>,
}

impl Canvas {
    /// Draws `text` (already WinAnsi-clean) with its baseline starting at `x, y`.
    fn text(&mut self, font: BuiltinFont, size: f32, x: f32, y: f32, colour: Rgb3, text: &str) {
        self.ops.extend([
            Op::SetFillColor { col: rgb(colour) },
            Op::StartTextSection,
            Op::SetFont {
                font: PdfFontHandle::Builtin(font),
                size: Pt(size),
            },
            Op::SetTextCursor { pos: pt(x, y) },
            Op::ShowText {
                items: vec![TextItem::Text(text.to_owned())],
            },
            Op::EndTextSection,
        ]);
    }

    /// Draws `text` ending at `right`; returns where it starts.
    fn text_right(
        &mut self,
        font: BuiltinFont,
        size: f32,
        right: f32,
        y: f32,
        colour: Rgb3,
        text: &str,
    ) -> f32 {
        let x = right - text_width(text, font, size);
        self.text(font, size, x, y, colour, text);
        x
    }

    fn rect(&mut self, x: f32, y: f32, w: f32, h: f32, (fill, stroke, width): BoxStyle) {
        self.ops.extend([
            Op::SetFillColor { col: rgb(fill) },
            Op::SetOutlineColor { col: rgb(stroke) },
            Op::SetOutlineThickness { pt: Pt(width) },
            Op::DrawRectangle {
                rectangle: Rect {
                    x: Pt(x),
                    y: Pt(y),
                    width: Pt(w),
                    height: Pt(h),
                    mode: Some(PaintMode::FillStroke),
                    winding_order: None,
                },
            },
        ]);
    }

    /// A vertical arrow from `y_from` down to its tip at `y_to`.
    fn arrow(&mut self, x: f32, y_from: f32, y_to: f32) {
        let head = 7.0;
        self.ops.extend([
            Op::SetOutlineColor { col: rgb(ARROW) },
            Op::SetOutlineThickness { pt: Pt(1.0) },
            Op::DrawLine {
                line: Line {
                    points: vec![corner(x, y_from), corner(x, y_to + head)],
                    is_closed: false,
                },
            },
            Op::SetFillColor { col: rgb(ARROW) },
            Op::DrawPolygon {
                polygon: Polygon {
                    rings: vec![PolygonRing {
                        points: vec![
                            corner(x - 4.0, y_to + head),
                            corner(x + 4.0, y_to + head),
                            corner(x, y_to),
                        ],
                    }],
                    mode: PaintMode::Fill,
                    winding_order: WindingOrder::NonZero,
                },
            },
        ]);
    }

    fn page(self) -> PdfPage {
        PdfPage::new(Mm(210.0), Mm(297.0), self.ops)
    }
}

fn rgb((r, g, b): Rgb3) -> Color {
    Color::Rgb(Rgb {
        r,
        g,
        b,
        icc_profile: None,
    })
}

fn pt(x: f32, y: f32) -> Point {
    Point { x: Pt(x), y: Pt(y) }
}

fn corner(x: f32, y: f32) -> LinePoint {
    LinePoint {
        p: pt(x, y),
        bezier: false,
    }
}

/// "2026-11-24 19:48:08 UTC".
fn format_utc(ms: i64) -> String {
    match DateTime::<Utc>::from_timestamp_millis(ms) {
        Some(t) => t.format("%Y-%m-%d %H:%M:%S UTC").to_string(),
        None => format!("invalid time ({ms} ms)"),
    }
}

/// Time of day in UTC ("19:48:08"), optionally with the date before it.
fn clock(ms: i64, with_date: bool) -> String {
    let pattern = if with_date {
        "%Y-%m-%d %H:%M:%S"
    } else {
        "%H:%M:%S"
    };
    DateTime::<Utc>::from_timestamp_millis(ms)
        .map_or_else(|| "?".to_owned(), |t| t.format(pattern).to_string())
}

fn date_of(ms: i64) -> Option<chrono::NaiveDate> {
    DateTime::<Utc>::from_timestamp_millis(ms).map(|t| t.date_naive())
}

fn stayed(ms: i64) -> String {
    format!("stayed {}", format_duration(ms))
}

/// "4 min 12 s"; a negative span (clock skew, unordered steps) shows as "—".
fn format_duration(ms: i64) -> String {
    if ms < 0 {
        return "—".to_owned();
    }
    if ms < 1000 {
        return "< 1 s".to_owned();
    }
    let s = ms / 1000;
    match s {
        0..60 => format!("{s} s"),
        60..3600 => format!("{} min {} s", s / 60, s % 60),
        3600..86400 => format!("{} h {} min", s / 3600, s % 3600 / 60),
        _ => format!("{} d {} h", s / 86400, s % 86400 / 3600),
    }
}

/// Money as the PDF's fonts can show it: the shop's one formatter, with the currency's code
/// ("INR 1,234.50").
pub fn format_money(minor: i64, currency: &str) -> String {
    crate::domain::format_money(minor, &clean(currency), crate::domain::MoneyStyle::Code)
}

/// `text` made showable in a WinAnsi font and truncated with "..." to fit
/// `max_width` points.
fn fit(text: &str, font: BuiltinFont, size: f32, max_width: f32) -> String {
    let text = clean(text);
    let budget = max_width * 1000.0 / size;
    if text_width(&text, font, 1000.0) <= budget {
        return text;
    }
    let budget = budget - 3.0 * f32::from(char_width('.', font));
    let mut used = 0.0;
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        used += f32::from(char_width(c, font));
        if used > budget {
            break;
        }
        out.push(c);
    }
    out.truncate(out.trim_end().len());
    out.push_str("...");
    out
}

/// Replaces what the standard fonts cannot show: a few common symbols get an
/// ASCII spelling, combining accents are dropped, anything else becomes `?`.
fn clean(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let mut chars = text.chars().peekable();
    while let Some(c) = chars.next() {
        match c {
            '\u{20B9}' => {
                out.push_str("INR");
                if chars.peek().is_some_and(|n| n.is_ascii_digit()) {
                    out.push(' ');
                }
            }
            '\u{2192}' => out.push_str("->"),
            '\u{2190}' => out.push_str("<-"),
            '\u{2010}' | '\u{2011}' | '\u{2012}' | '\u{2212}' => out.push('-'),
            '\u{0300}'..='\u{036F}' => {}
            c if c.is_whitespace() || c.is_control() => out.push(' '),
            c if is_win_ansi(c) => out.push(c),
            _ => out.push('?'),
        }
    }
    out
}

/// Whether WinAnsiEncoding (the standard fonts' encoding) has `c`.
fn is_win_ansi(c: char) -> bool {
    matches!(c, ' '..='~' | '\u{A0}'..='\u{FF}') || "€‚ƒ„…†‡ˆ‰Š‹ŒŽ‘’“”•–—˜™š›œžŸ".contains(c)
}

/// Width in points of clean `text`.
fn text_width(text: &str, font: BuiltinFont, size: f32) -> f32 {
    let units: u32 = text.chars().map(|c| u32::from(char_width(c, font))).sum();
    units as f32 * size / 1000.0
}

/// Advance width in 1/1000 em, from the Adobe AFM metrics for printable
/// ASCII; other characters get a safe upper bound for their class.
fn char_width(c: char, font: BuiltinFont) -> u16 {
    let table = if font == BOLD {
        &HELVETICA_BOLD
    } else {
        &HELVETICA
    };
    match c {
        ' '..='~' => table[c as usize - 0x20],
        '—' | '…' | '‰' | '™' | 'Æ' | 'Œ' | 'æ' | 'œ' => 1000,
        _ => 722,
    }
}

/// Helvetica widths for U+0020..=U+007E.
const HELVETICA: [u16; 95] = [
    278, 278, 355, 556, 556, 889, 667, 191, 333, 333, 389, 584, 278, 333, 278, 278, 556, 556, 556,
    556, 556, 556, 556, 556, 556, 556, 278, 278, 584, 584, 584, 556, 1015, 667, 667, 722, 722, 667,
    611, 778, 722, 278, 500, 667, 556, 833, 722, 778, 667, 778, 722, 667, 611, 722, 667, 944, 667,
    667, 611, 278, 278, 278, 469, 556, 333, 556, 556, 500, 556, 556, 278, 556, 556, 222, 222, 500,
    222, 833, 556, 556, 556, 556, 333, 500, 278, 556, 500, 722, 500, 500, 500, 334, 260, 334, 584,
];

/// Helvetica-Bold widths for U+0020..=U+007E.
const HELVETICA_BOLD: [u16; 95] = [
    278, 333, 474, 556, 556, 889, 722, 238, 333, 333, 389, 584, 278, 333, 278, 278, 556, 556, 556,
    556, 556, 556, 556, 556, 556, 556, 333, 333, 584, 584, 584, 611, 975, 722, 722, 722, 722, 667,
    611, 778, 722, 278, 556, 722, 611, 833, 722, 778, 667, 778, 722, 667, 611, 722, 667, 944, 667,
    667, 611, 333, 278, 333, 584, 556, 333, 556, 611, 556, 611, 556, 333, 611, 611, 278, 278, 556,
    278, 889, 611, 611, 611, 611, 389, 556, 333, 611, 556, 778, 556, 556, 500, 389, 280, 389, 584,
];

#[cfg(test)]
mod tests {
    use super::*;
    use printpdf::PdfParseOptions;

    /// 2026-11-24 19:48:08 UTC.
    const START: i64 = 1_795_549_688_000;

    fn journey(n: usize) -> JourneyDoc {
        let kinds = [
            StepKind::Page,
            StepKind::Action,
            StepKind::Cart,
            StepKind::Checkout,
            StepKind::OrderCompleted,
            StepKind::OrderFailed,
        ];
        let steps = (0..n)
            .map(|i| Step {
                at_ms: START + i as i64 * 7_345,
                kind: kinds[i % kinds.len()],
                label: format!("Step {i} label"),
                detail: i.is_multiple_of(2).then(|| format!("/products/{i}")),
            })
            .collect();
        JourneyDoc {
            shopper_name: "Zoë Ångström".to_owned(),
            shopper_email: "zoe@example.com".to_owned(),
            session_id: "3f2a9c1e-7b4d-4e8a-9c1f-0a1b2c3d4e5f".to_owned(),
            started_at_ms: START,
            ended_at_ms: START + 252_000,
            steps,
            summary: Summary {
                pages_visited: 12,
                items_added: 3,
                orders_placed: 2,
                orders_completed: 1,
                spent_minor: 123_450,
                currency: Some("INR".to_owned()),
            },
        }
    }

    /// Each page's text runs, decoded by printpdf's own parser.
    fn page_texts(pdf: &[u8]) -> Vec<Vec<String>> {
        let mut warnings = Vec::new();
        let parsed = PdfDocument::parse(pdf, &PdfParseOptions::default(), &mut warnings)
            .expect("the output parses as a PDF");
        parsed
            .pages
            .iter()
            .map(|page| {
                page.ops
                    .iter()
                    .filter_map(|op| match op {
                        Op::ShowText { items } => Some(
                            items
                                .iter()
                                .filter_map(|item| match item {
                                    TextItem::Text(text) => Some(text.as_str()),
                                    _ => None,
                                })
                                .collect(),
                        ),
                        _ => None,
                    })
                    .collect()
            })
            .collect()
    }

    fn assert_pdf_envelope(pdf: &[u8]) {
        assert!(pdf.starts_with(b"%PDF-"));
        assert!(pdf.trim_ascii_end().ends_with(b"%%EOF"));
    }

    /// Whether `texts` holds `wanted` in that order (other text in between).
    fn in_order(texts: &[String], wanted: &[String]) -> bool {
        let mut rest = texts.iter();
        wanted.iter().all(|w| rest.any(|t| t == w))
    }

    #[test]
    fn renders_a_short_journey() {
        let doc = journey(3);
        let pdf = render(&doc).expect("renders");
        assert_pdf_envelope(&pdf);

        let pages = page_texts(&pdf);
        assert_eq!(pages.len(), 3, "title, journey, summary");
        let all: Vec<String> = pages.concat();
        for expected in [
            "Ekart — shopper journey",
            "Zoë Ångström",
            "zoe@example.com",
            "2026-11-24 19:48:08 UTC",
            "2026-11-24 19:52:20 UTC",
            "4 min 12 s",
            "#3",
            "stayed 7 s",
            "stayed 3 min 57 s, until end",
            "INR 1,234.50",
        ] {
            assert!(all.iter().any(|t| t == expected), "missing {expected:?}");
        }
        let labels: Vec<String> = doc.steps.iter().map(|s| s.label.clone()).collect();
        assert!(in_order(&pages[1], &labels));
    }

    #[test]
    fn renders_a_thousand_steps_over_many_pages() {
        let doc = journey(1000);
        let pdf = render(&doc).expect("renders");
        assert_pdf_envelope(&pdf);

        let pages = page_texts(&pdf);
        assert_eq!(pages.len(), 1 + 1000 / STEPS_PER_PAGE + 1);
        let labels: Vec<String> = doc.steps.iter().map(|s| s.label.clone()).collect();
        assert!(in_order(&pages.concat(), &labels));
        assert!(pages[2].iter().any(|t| t == "from #10 on page 2"));
    }

    #[test]
    fn repeats_are_drawn_once_with_their_count() {
        let mut doc = journey(3);
        let reload = doc.steps[0].clone();
        doc.steps
            .splice(1..1, [reload.clone(), reload.clone(), reload]);
        doc.steps.extend((0..40).map(|i| Step {
            at_ms: START + 60_000 + i,
            kind: StepKind::Page,
            label: "Catalog".into(),
            detail: Some("/".into()),
        }));
        let pdf = render(&doc).expect("renders");
        let pages = page_texts(&pdf);
        assert_eq!(
            pages.len(),
            3,
            "46 steps, 5 after collapsing: one page of steps"
        );
        let all = pages.concat();
        for expected in [
            "Step 0 label ×4",
            "Step 1 label",
            "Step 2 label",
            "Catalog ×40",
        ] {
            assert!(
                all.iter().any(|t| t == expected),
                "missing {expected:?} in {all:?}"
            );
        }
    }

    #[test]
    fn renders_an_empty_journey_without_money() {
        let mut doc = journey(0);
        doc.summary = Summary::default();
        let pages = page_texts(&render(&doc).expect("renders"));
        assert_eq!(pages.len(), 2);
        assert!(pages[1].iter().any(|t| t == "nothing spent"));
    }

    #[test]
    fn keeps_latin1_and_replaces_what_winansi_lacks() {
        assert_eq!(clean("Masala Chai ×2 — ₹499"), "Masala Chai ×2 — INR 499");
        assert_eq!(clean("Cafe\u{301} 日本\tok"), "Cafe ?? ok");
        assert_eq!(clean("a → b"), "a -> b");
    }

    #[test]
    fn truncates_text_to_its_width() {
        assert_eq!(fit("short", REGULAR, 10.0, 100.0), "short");
        let long = "word ".repeat(100);
        let cut = fit(&long, REGULAR, 10.0, 100.0);
        assert!(
            cut.starts_with("word word") && cut.ends_with("..."),
            "{cut}"
        );
        assert!(text_width(&cut, REGULAR, 10.0) <= 100.0);
        // AFM widths: "Hi" is H (722) + i (222).
        assert_eq!(text_width("Hi", REGULAR, 1000.0), 944.0);
    }

    #[test]
    fn formats_durations_and_money() {
        assert_eq!(format_duration(-1), "—");
        assert_eq!(format_duration(999), "< 1 s");
        assert_eq!(format_duration(59_999), "59 s");
        assert_eq!(format_duration(252_000), "4 min 12 s");
        assert_eq!(format_duration(7_320_000), "2 h 2 min");
        assert_eq!(format_duration(90_000_000), "1 d 1 h");
        assert_eq!(format_money(123_450, "INR"), "INR 1,234.50");
        assert_eq!(format_money(5, "EUR"), "EUR 0.05");
        assert_eq!(format_money(-100_000_000, "USD"), "USD -1,000,000.00");
        assert_eq!(format_money(1_999, "₹"), "INR 19.99");
        assert_eq!(format_utc(START), "2026-11-24 19:48:08 UTC");
        assert_eq!(clock(START, false), "19:48:08");
    }
}
