//! The dashboard in a real browser (issue 12): Debian's headless Chromium, driven over the
//! DevTools protocol (support/cdp.rs), signs in through the fake GitHub's OAuth pages, reads the
//! pipeline of a private repository with a live preview and production, opens an environment and
//! its log, presses "Roll back" and production serves the previous commit through the proxy. A
//! user without access sees no private repository; a POST without (or with a wrong) CSRF token
//! is refused. Screenshots of the pages are written to target/test-artefacts/browser/.

use serde_json::{Value, json};
use stagebot::environment::{EnvState, Trigger};
use stagebot::event::payloads::{self, CommentPayload};
use stagebot::fake_github::FakePr;
use stagebot::slug::preview_slug;
use stagebot::testkit::{INSTALLATION, TestPr};
use stagebot::types::{EnvId, PrNumber, Sha, Slug};

use crate::flows::World;
use crate::support::cdp::{Browser, artefacts};

/// The repository is private: every payload says so.
fn private(mut payload: Value) -> Value {
    payload["repository"]["private"] = json!(true);
    payload
}

pub(crate) async fn send_private(w: &World, event: &str, payload: Value) {
    let (status, body) = w.stack.send(event, &private(payload)).await.unwrap();
    assert_eq!(status, 202, "{body}");
}

/// `user` comments `body` on PR `number` of the private repository.
pub(crate) async fn comment(w: &World, user: &str, number: u64, body: &str) {
    let id = w
        .stack
        .fake
        .add_user_comment(w.repo(), PrNumber(number), user, body);
    let mut p = CommentPayload::new(w.repo(), number, body);
    p.comment_id = id;
    p.author_login = user.to_owned();
    p.author_association = "MEMBER".into();
    p.installation_id = Some(INSTALLATION);
    send_private(w, "issue_comment", payloads::issue_comment(&p)).await;
}

fn production(w: &World) -> stagebot::environment::EnvRecord {
    w.env("production")
}

/// PR 11 with a live preview at `sha2`, production with release #1 (`sha1`) and #2 (`sha2`),
/// all of a private repository.
async fn pipeline_world() -> (World, TestPr, Sha, Sha) {
    let w = World::new("").await;
    let sha1 = w.commit("feature/login", "v1", "");
    let mut pr = TestPr::new(11, "feature/login", sha1.clone(), &w.git.clone_url());
    w.stack.fake.upsert_pr(
        w.repo(),
        FakePr::new(11, "feature/login", sha1.clone())
            .title("Login page <beta>")
            .author("octocat")
            .clone_url(&w.git.clone_url()),
    );
    send_private(&w, "pull_request", w.stack.pr_payload("opened", &pr, None)).await;
    w.stack.settle().await.unwrap();
    comment(&w, "maria", 11, "/promote production").await;
    w.stack.settle().await.unwrap();
    let sha2 = w.commit("feature/login", "v2", "");
    let before = std::mem::replace(&mut pr.sha, sha2.clone());
    w.stack
        .fake
        .set_pr_head(w.repo(), PrNumber(11), sha2.clone());
    send_private(
        &w,
        "pull_request",
        w.stack.pr_payload("synchronize", &pr, Some(&before)),
    )
    .await;
    w.stack.settle().await.unwrap();
    comment(&w, "maria", 11, "/promote production").await;
    w.stack.settle().await.unwrap();
    let prod = production(&w);
    assert_eq!(
        (prod.state(), prod.current_release(), prod.private),
        (EnvState::Live, Some(2), true),
        "{:?}",
        prod.last_error
    );
    (w, pr, sha1, sha2)
}

/// Sign in through the fake GitHub's authorize page as `login`, starting from `start`; the
/// browser ends up at `then_at`.
async fn sign_in(b: &mut Browser, w: &World, login: &str, start: &str, then_at: &str) {
    w.stack.fake.set_oauth_user(login, false);
    b.goto(start).await;
    b.wait_for("document.querySelector('#authorize')").await;
    assert!(
        b.url().await.starts_with(&w.stack.fake.url()),
        "sign-in goes to GitHub's page"
    );
    b.click("#authorize", then_at).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sign_in_see_the_pipeline_open_the_log_and_roll_production_back_in_chromium() {
    let (w, _pr, sha1, sha2) = pipeline_world().await;
    let base = w.stack.url();
    let shots = artefacts();
    let mut b = Browser::start().await;

    // Anonymous: the private repository is not shown, a sign-in link is.
    b.goto(&format!("{base}/")).await;
    let text = b.text().await;
    assert!(!text.contains("acme/webapp"), "{text}");
    assert!(text.contains("Sign in with GitHub"), "{text}");

    // A user without access signs in: still nothing of the private repository.
    sign_in(&mut b, &w, "mallory", &format!("{base}/auth/login"), &base).await;
    let text = b.text().await;
    assert!(text.contains("Signed in as @mallory"), "{text}");
    assert!(!text.contains("acme/webapp"), "{text}");
    b.goto(&format!("{base}/repos/acme/webapp")).await;
    assert!(b.text().await.contains("Not found"));
    b.goto(&format!("{base}/api/environments")).await;
    assert_eq!(b.text().await.trim(), "[]");
    b.goto(&format!("{base}/")).await;
    b.click("#logout", &base).await;
    assert!(b.text().await.contains("Sign in with GitHub"));

    // A log link of the private repository leads through sign-in and back to the log.
    let log1 = w.stack.app.log_location(
        &EnvId {
            repo: w.repo().clone(),
            slug: Slug::production(),
        },
        1,
    );
    w.stack.fake.set_oauth_user("maria", false);
    b.goto(&log1.1).await;
    b.wait_for("document.querySelector('#authorize')").await;
    b.click("#authorize", "/logs/acme/webapp/production/1")
        .await;
    let log = b.text().await;
    assert!(
        !log.trim().is_empty() && !log.contains("Authorize"),
        "{log}"
    );
    assert_eq!(b.url().await, log1.1);

    // Signed in as maria (maintain): the pipeline.
    b.goto(&format!("{base}/")).await;
    assert!(b.text().await.contains("Signed in as @maria"));
    b.click("a.repo", "/repos/acme/webapp").await;
    let text = b.text().await;
    let preview = preview_slug(Some(PrNumber(11)), "feature/login");
    for want in [
        "PREVIEWS",
        "STAGING",
        "PRODUCTION",
        preview.as_str(),
        "production",
        "#11 Login page <beta> by @octocat",
        sha2.short(),
        "by @maria",
        "live",
    ] {
        assert!(text.contains(want), "pipeline lacks {want:?}: {text}");
    }
    // Escaped, not markup.
    let html = b.eval("document.documentElement.outerHTML").await;
    assert!(
        html.as_str().unwrap().contains("Login page &lt;beta&gt;"),
        "{html}"
    );
    b.screenshot(&shots.join("pipeline.png")).await;
    b.viewport(390, 844, true).await;
    b.screenshot(&shots.join("pipeline-phone.png")).await;
    b.viewport(1280, 860, false).await;

    // The production page: releases, log tail, GitHub deployment link.
    b.click("#env-production h3 a", "/env/production").await;
    let text = b.text().await;
    for want in [
        "Releases",
        "#2 live",
        "#1",
        "promote from",
        "Log of #2",
        "Roll back",
    ] {
        assert!(
            text.contains(want),
            "environment page lacks {want:?}: {text}"
        );
    }
    assert!(
        b.eval("!!document.querySelector('a.deployment')").await == json!(true),
        "GitHub deployment link"
    );
    b.screenshot(&shots.join("environment.png")).await;
    // Its log, streamed from /logs.
    b.click("#release-2 a.log", "/logs/acme/webapp/production/2")
        .await;
    let log = b.text().await;
    assert!(!log.trim().is_empty(), "the log of #2 is empty");

    // Roll back to #1.
    b.goto(&format!("{base}/repos/acme/webapp/env/production"))
        .await;
    b.click("#rollback-1", "/env/production").await;
    w.stack.settle().await.unwrap();
    let prod = production(&w);
    assert_eq!(
        (prod.state(), prod.current_release()),
        (EnvState::Live, Some(3)),
        "{:?}",
        prod.last_error
    );
    let (status, body) = w.stack.get(&prod.url).await.unwrap();
    assert_eq!((status, body.as_str()), (200, sha1.as_str()));
    let release = w.stack.app.store().release(&prod.id, 3).unwrap().unwrap();
    assert_eq!(release.by, "maria");
    assert_eq!(
        release.trigger,
        Trigger::Dashboard {
            then: Box::new(Trigger::Rollback { to_release: 1 })
        }
    );
    // The browser sees it too: the page (reloaded by its script or by hand) and the app.
    b.goto(&format!("{base}/repos/acme/webapp/env/production"))
        .await;
    let text = b.text().await;
    assert!(text.contains("rollback to #1 (dashboard)"), "{text}");
    b.goto(&prod.url).await;
    assert_eq!(b.text().await.trim(), sha1.as_str());
    // Announced on the pull request.
    let sticky = w.stack.sticky(11).unwrap();
    assert!(
        sticky.contains("`production` rolled back to #1")
            && sticky.contains("from the dashboard by @maria"),
        "{sticky}"
    );

    // A form POST without the CSRF token, or with a wrong one, is refused, signed in or not.
    let cookies = b.cookies(&base).await;
    let session = cookies
        .iter()
        .find(|c| c["name"] == "stagebot_session")
        .expect("session cookie");
    assert_eq!(session["httpOnly"], json!(true));
    assert_eq!(session["sameSite"], json!("Lax"));
    let cookie = format!("stagebot_session={}", session["value"].as_str().unwrap());
    let http = reqwest::Client::new();
    let post = format!("{base}/repos/acme/webapp/env/production/actions");
    for (cookie, body) in [
        (Some(cookie.as_str()), "action=rollback&release=2"),
        (Some(cookie.as_str()), "action=rollback&release=2&csrf=00ff"),
        (None, "action=rollback&release=2"),
        (Some(cookie.as_str()), ""),
    ] {
        let mut req = http
            .post(&post)
            .header("Content-Type", "application/x-www-form-urlencoded")
            .body(body);
        if let Some(c) = cookie {
            req = req.header("Cookie", c);
        }
        let resp = req.send().await.unwrap();
        assert_eq!(resp.status().as_u16(), 403, "{body}");
    }
    w.stack.settle().await.unwrap();
    assert_eq!(production(&w).releases(), 3, "nothing was deployed");
    eprintln!("screenshots: {}", shots.display());
}
