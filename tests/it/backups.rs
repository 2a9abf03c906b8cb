//! Scheduled backups driven by the injected clock: written, verified, restorable, pruned beyond
//! KEEP, the metric, and a failure shown on `/readyz` until the next success.

use std::time::Duration;

use chrono::TimeZone;
use stagebot::backup::{BackupSettings, list};
use stagebot::store::Store;
use stagebot::testkit::{Stack, StackOptions};

async fn get_json(stack: &Stack, path: &str) -> (u16, serde_json::Value) {
    let resp = reqwest::get(format!("{}{path}", stack.url()))
        .await
        .unwrap();
    (resp.status().as_u16(), resp.json().await.unwrap())
}

async fn metric(stack: &Stack, name: &str) -> i64 {
    let text = reqwest::get(format!("{}/metrics", stack.url()))
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    text.lines()
        .find_map(|l| l.strip_prefix(&format!("{name} ")))
        .unwrap_or_else(|| panic!("no {name} in /metrics:\n{text}"))
        .parse()
        .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn backups_follow_the_clock_are_verified_pruned_and_failures_show_on_readyz() {
    let dir = tempfile::tempdir().unwrap();
    let backups = dir.path().join("backups");
    let t0 = chrono::Utc.with_ymd_and_hms(2026, 3, 1, 12, 0, 0).unwrap();
    let mut opts = StackOptions::new(&dir.path().join("data"));
    opts.manual_clock = Some(t0);
    opts.backup = Some(BackupSettings {
        dir: backups.clone(),
        every: Duration::from_secs(3600),
        keep: 3,
    });
    let stack = Stack::start(opts).await.unwrap();
    let clock = stack.clock.clone().unwrap();

    // due at once (the server's scheduler may have taken it already): one backup
    stack.app.run_schedules().await;
    let files = list(&backups).unwrap();
    assert_eq!(files.len(), 1, "{files:?}");
    assert_eq!(files[0].0, t0);
    assert_eq!(
        metric(&stack, "stagebot_backup_last_success_timestamp_seconds").await,
        t0.timestamp()
    );
    let (status, ready) = get_json(&stack, "/readyz").await;
    assert_eq!(status, 200, "{ready}");
    assert_eq!(ready["checks"]["backups"]["ok"], true, "{ready}");

    // not due yet: nothing new
    stack
        .app
        .store()
        .set_repo_installation(&stack.repo, 4242)
        .unwrap();
    clock.advance(chrono::Duration::minutes(59));
    stack.app.run_schedules().await;
    assert_eq!(list(&backups).unwrap().len(), 1);

    // due: the next one holds what the store holds now, and restores into an empty store
    clock.advance(chrono::Duration::minutes(1));
    stack.app.run_schedules().await;
    let files = list(&backups).unwrap();
    assert_eq!(files.len(), 2, "{files:?}");
    let restored = Store::open(&dir.path().join("restored")).unwrap();
    restored.restore(&files[0].1, false).unwrap();
    assert_eq!(
        restored.installation_of_repo(&stack.repo).unwrap(),
        Some(4242)
    );

    // every hour one more; beyond KEEP the oldest go
    let mut times = vec![t0, stack.app.now()];
    for _ in 0..4 {
        clock.advance(chrono::Duration::minutes(61));
        stack.app.run_schedules().await;
        stack.app.run_schedules().await; // a second pass in the same minute does nothing
        times.push(stack.app.now());
    }
    let kept: Vec<_> = list(&backups)
        .unwrap()
        .into_iter()
        .map(|(t, _)| t)
        .collect();
    let mut newest: Vec<_> = times.iter().rev().take(3).copied().collect();
    newest.sort_by(|a, b| b.cmp(a));
    assert_eq!(kept, newest);
    let names: Vec<String> = std::fs::read_dir(&backups)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    assert_eq!(names.len(), 3, "no temporary files left: {names:?}");
    let last_ok = *times.last().unwrap();
    assert_eq!(
        metric(&stack, "stagebot_backup_last_success_timestamp_seconds").await,
        last_ok.timestamp()
    );

    // the directory becomes unusable: the failure is logged and shown on /readyz, the metric
    // keeps the last success
    std::fs::remove_dir_all(&backups).unwrap();
    std::fs::write(&backups, "not a directory").unwrap();
    clock.advance(chrono::Duration::minutes(61));
    stack.app.run_schedules().await;
    let (status, ready) = get_json(&stack, "/readyz").await;
    assert_eq!(status, 503, "{ready}");
    assert_eq!(ready["ready"], false, "{ready}");
    assert_eq!(ready["checks"]["backups"]["ok"], false, "{ready}");
    let detail = ready["checks"]["backups"]["detail"].as_str().unwrap();
    assert!(detail.contains("last backup failed"), "{detail}");
    assert_eq!(ready["checks"]["store"]["ok"], true, "{ready}");
    assert_eq!(
        metric(&stack, "stagebot_backup_last_success_timestamp_seconds").await,
        last_ok.timestamp()
    );

    // fixed: retried within 15 minutes, not a whole period later
    std::fs::remove_file(&backups).unwrap();
    clock.advance(chrono::Duration::minutes(15));
    stack.app.run_schedules().await;
    assert_eq!(list(&backups).unwrap().len(), 1);
    let (status, ready) = get_json(&stack, "/readyz").await;
    assert_eq!(status, 200, "{ready}");
    assert_eq!(ready["checks"]["backups"]["ok"], true, "{ready}");
    assert_eq!(
        metric(&stack, "stagebot_backup_last_success_timestamp_seconds").await,
        stack.app.now().timestamp()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn after_a_restart_the_schedule_continues_from_the_newest_backup() {
    let dir = tempfile::tempdir().unwrap();
    let backups = dir.path().join("backups");
    let t0 = chrono::Utc.with_ymd_and_hms(2026, 3, 1, 12, 0, 0).unwrap();
    let settings = BackupSettings::new(&backups);
    assert_eq!(settings.every, Duration::from_secs(24 * 3600));
    assert_eq!(settings.keep, 7);
    // a backup from 2 hours "ago" is on disk
    std::fs::create_dir_all(&backups).unwrap();
    let old = backups.join(stagebot::backup::file_name(t0 - chrono::Duration::hours(2)));
    std::fs::write(&old, "{}").unwrap();
    let mut opts = StackOptions::new(&dir.path().join("data"));
    opts.manual_clock = Some(t0);
    opts.backup = Some(settings);
    let stack = Stack::start(opts).await.unwrap();
    stack.app.run_schedules().await;
    assert_eq!(list(&backups).unwrap().len(), 1, "not due for 22 hours");
    stack
        .clock
        .as_ref()
        .unwrap()
        .advance(chrono::Duration::hours(22));
    stack.app.run_schedules().await;
    assert_eq!(list(&backups).unwrap().len(), 2);
}
