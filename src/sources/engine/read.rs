//! The reading stage: pages read until a batch is gathered, each record read, windowed,
//! de-duplicated and prepared ([`crate::sources::write::prepare`]).

use std::collections::{BTreeMap, HashSet};
use std::sync::Arc;

use chrono::{DateTime, Utc};

use crate::sources::fetch::{self, FetchError, HttpPages, SqlPages, Window};
use crate::sources::record::{self, Record};
use crate::sources::spec::{Catalog, Rule, Source, SourceKind};
use crate::sources::write::{Read, SkipRow, prepare};

/// The reading stage's state.
pub(super) struct ReadCtx {
    pub(super) reader: Reader,
    pub(super) window: Window,
    /// The current query's lower bound (moves with re-anchoring).
    pub(super) lower: DateTime<Utc>,
    /// The window's end (narrowed once the server's clock is known).
    pub(super) upper: DateTime<Utc>,
    /// The cursor and boundary ids the run started from.
    pub(super) start_cursor: DateTime<Utc>,
    pub(super) start_boundary: HashSet<String>,
    /// The ids already read in this run, by cursor: re-anchored queries repeat their boundary,
    /// offset pages shift when records change.
    pub(super) seen: BTreeMap<DateTime<Utc>, HashSet<String>>,
    /// Sorted sources: the lowest cursor of the last batch. Nothing before it can come again (a
    /// re-anchored query starts later, a shifted page moves by a few records, not a batch), so
    /// what `seen` holds before it is forgotten and its size stays about two batches.
    pub(super) forget_before: Option<DateTime<Utc>>,
    pub(super) last_cursor: Option<DateTime<Utc>>,
    /// Records past the starting cursor (re-reading the lookback is not progress).
    pub(super) progress: u64,
    pub(super) records_seen: u64,
    pub(super) pages: u32,
    pub(super) stopped_early: bool,
    pub(super) done: bool,
    pub(super) error: Option<String>,
}

/// Reads pages until about WRITE_BATCH records are gathered (or the window ends, the run limit
/// is reached, or a request fails: then `ctx.error` is set and the batch holds what was read
/// before, to be written), and prepares them.
pub(super) async fn read_batch(
    source: &Arc<Source>,
    catalog: &Arc<Catalog>,
    ctx: &mut ReadCtx,
) -> Batch {
    let templates = &catalog.templates;
    if source.sorted
        && let Some(before) = ctx.forget_before
    {
        ctx.seen = ctx.seen.split_off(&before);
    }
    let mut records: Vec<Record> = Vec::new();
    let mut skips: Vec<SkipRow> = Vec::new();
    loop {
        if let Some(max) = source.max_records_per_run
            && ctx.progress >= max
        {
            ctx.stopped_early = true;
            break;
        }
        if records.len() + skips.len() >= WRITE_BATCH {
            break;
        }
        if let Reader::Http(pages) = &mut ctx.reader
            && pages.near_cap()
        {
            let at = ctx.last_cursor.unwrap_or(ctx.lower);
            if at <= ctx.lower {
                ctx.error = Some(format!(
                    "more records share the time {at} than the source's result cap allows in one query"
                ));
                break;
            }
            ctx.lower = at;
            pages.reanchor(at);
        }
        let page = match &mut ctx.reader {
            Reader::Http(pages) => pages.next_page().await,
            Reader::Sql(pages) => pages.next_page().await,
        };
        let page = match page {
            Ok(Some(page)) => page,
            Ok(None) => {
                ctx.done = true;
                break;
            }
            Err(FetchError { message, .. }) => {
                ctx.error = Some(message);
                break;
            }
        };
        ctx.pages += 1;
        if let Some(server) = page.server_time {
            let settle = chrono::Duration::from_std(source.settle).unwrap_or_default();
            if server - settle < ctx.upper {
                ctx.upper = server - settle;
                ctx.reader.set_upper(ctx.upper);
            }
        }
        let mut read = Vec::new();
        for raw in page.records {
            match record::read(source, raw) {
                Ok(r) => {
                    // (A vendor cursor decides what is new by itself: no window applies.)
                    if !source.resume_token
                        && (r.cursor < ctx.window.lower || r.cursor >= ctx.upper)
                    {
                        // Outside the window: before it (an API without a lower filter) or
                        // too recent (the next run reads it once it has settled).
                        continue;
                    }
                    if r.cursor == ctx.start_cursor && ctx.start_boundary.contains(&r.id) {
                        continue;
                    }
                    if !ctx.seen.entry(r.cursor).or_default().insert(r.id.clone()) {
                        continue;
                    }
                    read.push(r);
                }
                Err(skip) => skips.push((None, None, skip)),
            }
        }
        ctx.progress += read.iter().filter(|r| r.cursor > ctx.start_cursor).count() as u64;
        if let (Reader::Http(pages), SourceKind::Http(spec)) = (&mut ctx.reader, &source.kind)
            && !spec.enrich.is_empty()
            && !read.is_empty()
            && let Err(e) = fetch::enrich(&mut pages.http, source, spec, templates, &mut read).await
        {
            ctx.error = Some(e.message);
            break;
        }
        if let Some(max_cursor) = read.iter().map(|r| r.cursor).max() {
            ctx.last_cursor = Some(ctx.last_cursor.map_or(max_cursor, |c| c.max(max_cursor)));
        }
        // Keyset paging: the next page is a new query from the last time read (the records
        // at that time come again and are skipped by `seen`); within a run of equal times
        // the token goes on.
        if source.keyset_paging
            && let Reader::Http(pages) = &mut ctx.reader
            && !pages.is_done()
            && let Some(at) = ctx.last_cursor
            && at > ctx.lower
        {
            ctx.lower = at;
            pages.reanchor(at);
        }
        records.append(&mut read);
        if ctx.reader.is_done() {
            ctx.done = true;
            break;
        }
    }
    ctx.records_seen += (records.len() + skips.len()) as u64;
    // The same record twice in a batch (a SQL source joining rows, a re-anchored page with a
    // newer version): its latest version.
    records.sort_by(|a, b| a.id.cmp(&b.id).then(b.cursor.cmp(&a.cursor)));
    records.dedup_by(|later, kept| later.id == kept.id);
    records.sort_by(|a, b| a.cursor.cmp(&b.cursor).then(a.id.cmp(&b.id)));
    if let Some(first) = records.first() {
        ctx.forget_before = Some(first.cursor);
    }
    let at_last_cursor = records
        .iter()
        .filter(|r| Some(r.cursor) == ctx.last_cursor)
        .map(|r| r.id.clone())
        .collect();
    let rules: Vec<&Rule> = catalog.rules_of(&source.name).collect();
    let (reads, deleted) = prepare(
        catalog,
        source,
        &rules,
        ctx.window.lower,
        records,
        &mut skips,
    );
    let resume_token = match &ctx.reader {
        Reader::Http(pages) if source.resume_token => pages.resume_token(),
        _ => None,
    };
    Batch {
        reads,
        deleted,
        skips,
        resume_token,
        last_cursor: ctx.last_cursor,
        at_last_cursor,
        records_seen: ctx.records_seen,
        pages: ctx.pages,
        requests: ctx.reader.requests(),
        window_to: ctx.upper,
    }
}

/// Records read and prepared, not yet written, with the reading stage's figures at the time.
#[derive(Default)]
pub(super) struct Batch {
    pub(super) reads: Vec<Read>,
    pub(super) deleted: Vec<String>,
    pub(super) skips: Vec<SkipRow>,
    pub(super) last_cursor: Option<DateTime<Utc>>,
    /// The ids read at exactly `last_cursor` in this batch.
    pub(super) at_last_cursor: Vec<String>,
    /// The vendor token to resume from after this batch.
    pub(super) resume_token: Option<String>,
    pub(super) records_seen: u64,
    pub(super) pages: u32,
    pub(super) requests: u32,
    pub(super) window_to: DateTime<Utc>,
}

/// Records per write transaction (pages are gathered up to about this many). Each batch costs
/// three commits and a dozen statements whatever its size: 2,000 took a 100,000-record import
/// from 21,000 to 25,000 records/s, for about 12 MB more memory at its peak.
pub const WRITE_BATCH: usize = 2000;

pub(super) enum Reader {
    Http(Box<HttpPages>),
    Sql(SqlPages),
}

impl Reader {
    pub(super) fn is_done(&self) -> bool {
        match self {
            Reader::Http(p) => p.is_done(),
            Reader::Sql(p) => p.is_done(),
        }
    }
    pub(super) fn requests(&self) -> u32 {
        match self {
            Reader::Http(p) => p.http.requests,
            Reader::Sql(p) => p.requests,
        }
    }
    pub(super) fn set_upper(&mut self, upper: DateTime<Utc>) {
        match self {
            Reader::Http(p) => p.set_upper(upper),
            Reader::Sql(p) => p.set_upper(upper),
        }
    }
}
