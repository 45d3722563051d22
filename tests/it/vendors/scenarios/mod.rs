//! The checks of issue 6, each written once against [`Preset`] and run for every preset by
//! [`preset_scenarios!`]: reading ([`reading`]: full paging, equal timestamps at a page and a
//! run boundary, late changes, a window's last second), records ([`records`]: deletions, odd
//! phones, enrichment) and failures ([`failures`]: the vendor's rate-limit answer, a failed
//! commit, a process dying between batches). Every check asserts what the database holds.

mod failures;
mod reading;
mod records;

use std::collections::BTreeMap;

pub use failures::{dying_between_batches, failed_commit, rate_limit};
pub use reading::{equal_timestamps, full_paging, late_change, window_end};
pub use records::{deletions, enrichment, odd_phones};

use super::preset::{Preset, phone_of};

/// `n` seconds.
pub fn seconds(n: u64) -> chrono::Duration {
    chrono::Duration::seconds(n as i64)
}

/// Record id → the phones of its jobs, for records `numbers` each messaged once as seeded.
pub fn once_each(
    preset: &impl Preset,
    numbers: impl IntoIterator<Item = u64>,
) -> BTreeMap<String, Vec<String>> {
    numbers
        .into_iter()
        .map(|n| (preset.external_id(n), vec![phone_of(n)]))
        .collect()
}

/// One test per scenario for the preset `$preset` (an expression, awaited in each test), and
/// with `enriched` the enrichment scenario too.
macro_rules! preset_scenarios {
    ($preset:expr) => {
        #[tokio::test]
        async fn full_paging_reads_every_page_and_a_rerun_adds_nothing() {
            $crate::vendors::scenarios::full_paging(&$preset).await;
        }

        #[tokio::test]
        async fn equal_timestamps_at_a_page_and_a_run_boundary_lose_and_repeat_nothing() {
            $crate::vendors::scenarios::equal_timestamps(&$preset).await;
        }

        #[tokio::test]
        async fn a_late_change_inside_the_lookback_is_picked_up_exactly_once() {
            $crate::vendors::scenarios::late_change(&$preset).await;
        }

        #[tokio::test]
        async fn deleted_records_are_never_messaged_and_seen_deletions_cancel_queued_jobs() {
            $crate::vendors::scenarios::deletions(&$preset).await;
        }

        #[tokio::test]
        async fn a_change_in_the_last_second_of_a_window_is_read_by_this_run_or_the_next() {
            $crate::vendors::scenarios::window_end(&$preset).await;
        }

        #[tokio::test]
        async fn the_vendors_rate_limit_answer_ends_the_run_right_and_loses_nothing() {
            $crate::vendors::scenarios::rate_limit(&$preset).await;
        }

        #[tokio::test]
        async fn odd_phone_formats_become_e164_and_unusable_ones_are_skipped_with_the_reason() {
            $crate::vendors::scenarios::odd_phones(&$preset).await;
        }

        #[tokio::test]
        async fn a_failed_commit_rolls_the_batch_back_and_the_rerun_creates_each_job_once() {
            $crate::vendors::scenarios::failed_commit(&$preset).await;
        }

        #[tokio::test]
        async fn a_process_dying_between_batches_keeps_the_first_and_repeats_nothing() {
            $crate::vendors::scenarios::dying_between_batches(&$preset).await;
        }
    };
    ($preset:expr, enriched) => {
        $crate::vendors::scenarios::preset_scenarios!($preset);

        #[tokio::test]
        async fn each_record_takes_its_persons_phone_read_afresh_every_run() {
            $crate::vendors::scenarios::enrichment(&$preset).await;
        }
    };
}

pub(crate) use preset_scenarios;
