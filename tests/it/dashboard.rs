//! The dashboard over plain HTTP (docs/dashboard.md): the sign-in flow's checks (state bound to
//! the browser, codes good once), sessions that survive a restart, who sees a private
//! repository, and actions decided by the user's GitHub permission, recorded and announced.

use reqwest::redirect::Policy;
use serde_json::Value;
use stagebot::environment::EnvState;
use stagebot::slug::preview_slug;
use stagebot::testkit::{Stack, StackOptions, TestPr};
use stagebot::types::PrNumber;

use crate::browser::send_private;
use crate::flows::World;

fn client() -> reqwest::Client {
    reqwest::Client::builder()
        .redirect(Policy::none())
        .build()
        .unwrap()
}

fn location(r: &reqwest::Response) -> String {
    r.headers()
        .get("location")
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default()
        .to_owned()
}

/// `name=value` of the cookie `name` the response sets.
fn set_cookie(r: &reqwest::Response, name: &str) -> Option<String> {
    r.headers()
        .get_all("set-cookie")
        .iter()
        .filter_map(|v| v.to_str().ok())
        .find(|v| v.starts_with(&format!("{name}=")))
        .map(|v| v.split(';').next().unwrap_or_default().to_owned())
}

/// The sign-in round trip as a browser makes it (GitHub authorizes `login` at once); returns
/// the session cookie (`stagebot_session=…`).
async fn sign_in(stack: &Stack, login: &str) -> String {
    stack.fake.set_oauth_user(login, true);
    let http = client();
    let start = http
        .get(format!("{}/auth/login?next=/", stack.url()))
        .send()
        .await
        .unwrap();
    assert_eq!(start.status().as_u16(), 303);
    let pre = set_cookie(&start, "stagebot_oauth").expect("pre-session cookie");
    let authorize = location(&start);
    assert!(
        authorize.starts_with(&format!("{}/login/oauth/authorize?", stack.fake.url())),
        "{authorize}"
    );
    let back = http.get(&authorize).send().await.unwrap();
    let callback = location(&back);
    assert!(callback.contains("/auth/callback?code="), "{callback}");
    let done = http
        .get(&callback)
        .header("Cookie", &pre)
        .send()
        .await
        .unwrap();
    assert_eq!(
        done.status().as_u16(),
        303,
        "{}",
        done.text().await.unwrap()
    );
    let session = set_cookie(&done, "stagebot_session").expect("session cookie");
    let attrs = done
        .headers()
        .get_all("set-cookie")
        .iter()
        .filter_map(|v| v.to_str().ok())
        .find(|v| v.starts_with("stagebot_session="))
        .unwrap()
        .to_owned();
    assert!(
        attrs.contains("HttpOnly") && attrs.contains("SameSite=Lax") && attrs.contains("Path=/"),
        "{attrs}"
    );
    // http://127.0.0.1: not Secure (a browser would drop it); https public URLs get Secure
    // and the `__Host-` prefix.
    assert!(!attrs.contains("Secure"), "{attrs}");
    // Framing refused: a preview on a sibling subdomain is "same-site" and would get the
    // session cookie sent into a frame of the dashboard (clickjacking its buttons).
    let page = http
        .get(format!("{}/", stack.url()))
        .header("Cookie", &session)
        .send()
        .await
        .unwrap();
    let header = |name: &str| {
        page.headers()
            .get(name)
            .and_then(|v| v.to_str().ok())
            .unwrap_or_default()
            .to_owned()
    };
    assert_eq!(header("x-frame-options"), "DENY");
    assert!(
        header("content-security-policy").contains("frame-ancestors 'none'"),
        "{}",
        header("content-security-policy")
    );
    assert_eq!(header("x-content-type-options"), "nosniff");
    session
}

async fn get(stack: &Stack, path: &str, cookie: Option<&str>) -> (u16, String) {
    let mut req = client().get(format!("{}{path}", stack.url()));
    if let Some(c) = cookie {
        req = req.header("Cookie", c);
    }
    let r = req.send().await.unwrap();
    let status = r.status().as_u16();
    (status, r.text().await.unwrap())
}

async fn post(stack: &Stack, path: &str, cookie: &str, body: &str) -> (u16, String) {
    let r = client()
        .post(format!("{}{path}", stack.url()))
        .header("Cookie", cookie)
        .header("Content-Type", "application/x-www-form-urlencoded")
        .body(body.to_owned())
        .send()
        .await
        .unwrap();
    let status = r.status().as_u16();
    (status, r.text().await.unwrap())
}

/// The CSRF token in a page's forms.
fn csrf(page: &str) -> String {
    let at = page
        .find("name=csrf value=\"")
        .expect("a form with a CSRF token")
        + 17;
    page[at..].split('"').next().unwrap().to_owned()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sign_in_checks_the_state_and_sessions_survive_a_restart() {
    let dir = tempfile::tempdir().unwrap();
    let opts = || StackOptions::new(&dir.path().join("data"));
    let stack = Stack::start(opts()).await.unwrap();
    stack.grant("ada", stagebot::types::Permission::Read);
    let http = client();

    // A callback this browser did not start, or with another state, is refused.
    stack.fake.set_oauth_user("ada", true);
    let start = http
        .get(format!("{}/auth/login", stack.url()))
        .send()
        .await
        .unwrap();
    let pre = set_cookie(&start, "stagebot_oauth").unwrap();
    let callback = location(&http.get(location(&start)).send().await.unwrap());
    let (status, body) = get(&stack, &callback.replace(&stack.url(), ""), None).await;
    assert_eq!(status, 403, "{body}");
    let forged = callback.replace("state=", "state=0");
    let r = http
        .get(&forged)
        .header("Cookie", &pre)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status().as_u16(), 403);
    assert_eq!(stack.fake.oauth_exchanges(), 0, "no code was exchanged");
    // The right one works once; the same code again is refused by GitHub.
    let ok = http
        .get(&callback)
        .header("Cookie", &pre)
        .send()
        .await
        .unwrap();
    assert_eq!(ok.status().as_u16(), 303);
    let again = http
        .get(&callback)
        .header("Cookie", &pre)
        .send()
        .await
        .unwrap();
    assert_eq!(again.status().as_u16(), 502, "a code is good once");

    // A session outlives a restart of stagebot (the key is in the data dir, 0600).
    let session = sign_in(&stack, "ada").await;
    let (_, page) = get(&stack, "/", Some(&session)).await;
    assert!(
        page.contains("Signed in as <strong>@ada</strong>"),
        "{page}"
    );
    let fake = stack.stop().await;
    use std::os::unix::fs::PermissionsExt as _;
    let key = dir.path().join("data").join("session.key");
    assert_eq!(
        std::fs::metadata(&key).unwrap().permissions().mode() & 0o777,
        0o600
    );
    let stack = Stack::start_with(fake, opts()).await.unwrap();
    let (_, page) = get(&stack, "/", Some(&session)).await;
    assert!(
        page.contains("Signed in as <strong>@ada</strong>"),
        "{page}"
    );
    // A tampered cookie is nobody; signing out needs the CSRF token and ends the session.
    let tampered = session.replace("stagebot_session=", "stagebot_session=0");
    let (_, page) = get(&stack, "/", Some(&tampered)).await;
    assert!(!page.contains("@ada"), "{page}");
    let (status, _) = post(&stack, "/auth/logout", &session, "").await;
    assert_eq!(status, 403);
    let token = csrf(&get(&stack, "/", Some(&session)).await.1);
    let (status, _) = post(&stack, "/auth/logout", &session, &format!("csrf={token}")).await;
    assert_eq!(status, 303);
    let (_, page) = get(&stack, "/", Some(&session)).await;
    assert!(!page.contains("@ada"), "{page}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn who_sees_a_private_repository_and_who_may_act_on_it() {
    let w = World::new("").await;
    let sha = w.commit("feature/a", "v1", "");
    let pr = TestPr::new(5, "feature/a", sha.clone(), &w.git.clone_url());
    w.stack.fake.upsert_pr(
        w.repo(),
        stagebot::fake_github::FakePr::new(5, "feature/a", sha.clone())
            .clone_url(&w.git.clone_url()),
    );
    send_private(&w, "pull_request", w.stack.pr_payload("opened", &pr, None)).await;
    w.stack.settle().await.unwrap();
    let slug = preview_slug(Some(PrNumber(5)), "feature/a");
    let env_page = format!("/repos/acme/webapp/env/{slug}");
    assert_eq!(w.preview(5, "feature/a").state(), EnvState::Live);

    // Anonymous: hidden, and pages of it lead to sign-in.
    let (_, api) = get(&w.stack, "/api/environments", None).await;
    assert_eq!(api, "[]");
    let (status, _) = get(&w.stack, &env_page, None).await;
    assert_eq!(status, 303);
    // Read access on GitHub: shown, with the actions (GitHub decides when they are used).
    w.stack.grant("rita", stagebot::types::Permission::Read);
    let rita = sign_in(&w.stack, "rita").await;
    let (_, api) = get(&w.stack, "/api/environments", Some(&rita)).await;
    let envs: Value = serde_json::from_str(&api).unwrap();
    assert_eq!(envs[0]["slug"], slug.as_str(), "{api}");
    let (status, page) = get(&w.stack, &env_page, Some(&rita)).await;
    assert_eq!(status, 200);
    assert!(page.contains("id=\"teardown\""), "{page}");
    let token = csrf(&page);
    let before = w
        .stack
        .fake
        .requests_to("GET", "/repos/acme/webapp/collaborators/rita/permission")
        .len();
    let (status, body) = post(
        &w.stack,
        &format!("{env_page}/actions"),
        &rita,
        &format!("csrf={token}&action=teardown"),
    )
    .await;
    assert_eq!(status, 409, "{body}");
    assert!(
        body.contains("/teardown needs write permission") && body.contains("@rita has read"),
        "{body}"
    );
    assert_eq!(
        w.stack
            .fake
            .requests_to("GET", "/repos/acme/webapp/collaborators/rita/permission")
            .len(),
        before + 1,
        "the permission is asked of GitHub, as for a command"
    );
    // alice (write) extends, then tears down: done, recorded, announced.
    let alice = sign_in(&w.stack, "alice").await;
    let token = csrf(&get(&w.stack, &env_page, Some(&alice)).await.1);
    let expiry = w.preview(5, "feature/a").expires_at().unwrap();
    let (status, _) = post(
        &w.stack,
        &format!("{env_page}/actions"),
        &alice,
        &format!("csrf={token}&action=extend&by=3d"),
    )
    .await;
    assert_eq!(status, 303);
    assert!(w.preview(5, "feature/a").expires_at().unwrap() > expiry);
    let (status, _) = post(
        &w.stack,
        &format!("{env_page}/actions"),
        &alice,
        &format!("csrf={token}&action=teardown"),
    )
    .await;
    assert_eq!(status, 303);
    w.stack.settle().await.unwrap();
    assert_eq!(w.preview(5, "feature/a").state(), EnvState::Destroyed);
    let sticky = w.stack.sticky(5).unwrap();
    assert!(
        sticky.contains(&format!("`{slug}` torn down from the dashboard by @alice.")),
        "{sticky}"
    );
    // A user without any access sees nothing of it, signed in or not.
    let eve = sign_in(&w.stack, "eve").await;
    let (_, api) = get(&w.stack, "/api/environments", Some(&eve)).await;
    assert_eq!(api, "[]");
    let (status, _) = get(&w.stack, &env_page, Some(&eve)).await;
    assert_eq!(status, 404);
}
