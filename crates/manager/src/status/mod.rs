//! The status page (`stackd --status-addr`): a read-only web page over
//! HTTPS, with the manager's own certificate, for the operator who wants to
//! see the cluster before reaching for stackctl.
//!
//! ```text
//!  GET  /        session? ─► read the state (leader's read index) ─► render::status_page
//!                no ──────► 303 /login
//!  GET  /login   the form (render::login_page)
//!  POST /login   token=STKC-1-… ─► auth::token_caller (as a control call) + Action::Read
//!                ─► a session (session.rs): cookie __Host-stackd-session, 303 /
//!  POST /logout  the session ends ─► 303 /login
//! ```
//!
//! The token is posted once, in the body of a form, and stays on the
//! server: the browser keeps a random session id in an `HttpOnly; Secure;
//! SameSite=Strict` cookie. Each request checks that the session's token is
//! still in the state and may read: a revoked token ends its sessions on
//! their next request. Failed sign-ins are limited per client address.
//! Everything here is a thin shell: the HTML comes from the pure
//! `render.rs`, the sessions from `session.rs`.

mod render;
mod session;

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::extract::{ConnectInfo, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::service::TowerToHyperService;
use stackd_core::ClusterState;
use stackd_core::security::Action;
use tokio_stream::StreamExt;

use crate::auth;
use crate::now_ms;
use crate::raft::RaftNode;
use session::Sessions;

/// The session cookie. `__Host-`: the browser keeps it only if it is
/// `Secure`, for `/`, and for this host alone.
const COOKIE: &str = "__Host-stackd-session";
/// How long a page waits for the leader to confirm its read.
const READ_TIMEOUT: Duration = Duration::from_secs(3);
/// The longest form a sign-in may post.
const MAX_FORM: usize = 4096;
/// The page's content security policy: no script, no frames, forms only here.
const CSP: &str =
    "default-src 'none'; style-src 'unsafe-inline'; form-action 'self'; frame-ancestors 'none'; base-uri 'none'";

/// What every handler shares.
struct Page {
    raft: RaftNode,
    /// The serving manager's name.
    served_by: String,
    sessions: Sessions,
}

type Shared = Arc<Page>;

/// A response with the page's headers: HTML (when `body`), never cached,
/// no script, no framing; a redirect to `location`; a cookie to set.
fn respond(code: StatusCode, body: Option<String>, location: Option<&str>, cookie: Option<String>) -> Response {
    let mut response = (code, body.unwrap_or_default()).into_response();
    let h = response.headers_mut();
    h.insert(header::CONTENT_TYPE, HeaderValue::from_static("text/html; charset=utf-8"));
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    h.insert(header::CONTENT_SECURITY_POLICY, HeaderValue::from_static(CSP));
    h.insert(header::X_CONTENT_TYPE_OPTIONS, HeaderValue::from_static("nosniff"));
    h.insert(header::X_FRAME_OPTIONS, HeaderValue::from_static("DENY"));
    // Not `no-referrer`: with it a browser posts the sign-in form with
    // `Origin: null`, which the origin check must refuse.
    h.insert(header::REFERRER_POLICY, HeaderValue::from_static("same-origin"));
    if let Some(l) = location.and_then(|l| HeaderValue::from_str(l).ok()) {
        h.insert(header::LOCATION, l);
    }
    if let Some(c) = cookie.and_then(|c| HeaderValue::from_str(&c).ok()) {
        h.insert(header::SET_COOKIE, c);
    }
    response
}

fn set_cookie(id: &str) -> String {
    format!("{COOKIE}={id}; Path=/; HttpOnly; Secure; SameSite=Strict; Max-Age={}", session::SESSION_TTL_MS / 1000)
}

fn clear_cookie() -> String {
    format!("{COOKIE}=; Path=/; HttpOnly; Secure; SameSite=Strict; Max-Age=0")
}

fn session_id(headers: &HeaderMap) -> Option<&str> {
    headers.get_all(header::COOKIE).iter().filter_map(|v| v.to_str().ok()).find_map(|h| session::cookie(h, COOKIE))
}

fn login(code: StatusCode, message: Option<&str>, cookie: Option<String>) -> Response {
    respond(code, Some(render::login_page(message)), None, cookie)
}

impl Page {
    /// The applied state, after the leader's read index when it answers in
    /// time; otherwise this manager's own, with why it may lag.
    async fn read(&self) -> (Arc<ClusterState>, Option<String>) {
        let lag = match tokio::time::timeout(READ_TIMEOUT, self.raft.read_barrier()).await {
            Ok(Ok(())) => None,
            Ok(Err(e)) => Some(format!("the leader did not confirm the read: {e}")),
            Err(_) => Some(format!("the leader did not confirm the read within {READ_TIMEOUT:?}")),
        };
        (self.raft.shared().snapshot(), lag)
    }
}

async fn index(State(page): State<Shared>, headers: HeaderMap) -> Response {
    let now = now_ms();
    let Some(id) = session_id(&headers) else {
        return respond(StatusCode::SEE_OTHER, None, Some("/login"), None);
    };
    let Some(session) = page.sessions.get(id, now) else {
        return respond(StatusCode::SEE_OTHER, None, Some("/login"), Some(clear_cookie()));
    };
    let (state, lag) = page.read().await;
    let Some(token) = state.security.tokens.get(&session.token_id).filter(|t| auth::token_may(t, Action::Read).is_ok())
    else {
        page.sessions.close(id);
        return login(
            StatusCode::UNAUTHORIZED,
            Some("Your token was revoked (or may no longer read): sign in with a valid one."),
            Some(clear_cookie()),
        );
    };
    let events = page.raft.shared().latest_events(render::EVENTS_SHOWN);
    let leader = page.raft.status().leader.map(|l| format!("{l:016x}"));
    let html = render::status_page(&render::View {
        state: &state,
        leader: leader.as_deref(),
        served_by: &page.served_by,
        may_lag: lag.as_deref(),
        events: &events,
        viewer: (&token.name, token.role.as_str()),
        now,
    });
    respond(StatusCode::OK, Some(html), None, None)
}

async fn login_form(State(page): State<Shared>, headers: HeaderMap) -> Response {
    if session_id(&headers).is_some_and(|id| page.sessions.get(id, now_ms()).is_some()) {
        return respond(StatusCode::SEE_OTHER, None, Some("/"), None);
    }
    login(StatusCode::OK, None, None)
}

/// Whether a form post comes from this site: a browser sends `Origin`;
/// when it does, it must be this host's.
fn same_origin(headers: &HeaderMap) -> bool {
    let Some(origin) = headers.get(header::ORIGIN) else { return true };
    let host = headers.get(header::HOST).and_then(|h| h.to_str().ok()).unwrap_or_default();
    origin.to_str().is_ok_and(|o| o == format!("https://{host}"))
}

async fn sign_in(
    State(page): State<Shared>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    headers: HeaderMap,
    body: String,
) -> Response {
    let now = now_ms();
    if !same_origin(&headers) {
        return login(StatusCode::FORBIDDEN, Some("The sign-in came from another site: refused."), None);
    }
    if !page.sessions.attempt(peer.ip(), now) {
        return login(
            StatusCode::TOO_MANY_REQUESTS,
            Some("Too many failed sign-ins from your address: wait a minute."),
            None,
        );
    }
    let token = if body.len() > MAX_FORM {
        None
    } else {
        url::form_urlencoded::parse(body.as_bytes()).find(|(k, _)| k == "token").map(|(_, v)| v.trim().to_string())
    };
    let Some(token) = token.filter(|t| !t.is_empty()) else {
        return login(StatusCode::BAD_REQUEST, Some("Paste a client token (STKC-1-…)."), None);
    };
    let (state, _) = page.read().await;
    let checked = auth::token_caller(&token, &state)
        .map_err(|e| e.to_string())
        .and_then(|t| auth::token_may(t, Action::Read).map(|()| t.id.clone()).map_err(|e| e.message().to_string()));
    match checked {
        Ok(token_id) => {
            page.sessions.succeeded(peer.ip());
            tracing::info!(token = %token_id, peer = %peer, "status page: signed in");
            let id = page.sessions.open(&token_id, now);
            respond(StatusCode::SEE_OTHER, None, Some("/"), Some(set_cookie(&id)))
        }
        Err(why) => {
            tracing::info!(peer = %peer, "status page: a sign-in was refused");
            login(StatusCode::UNAUTHORIZED, Some(&format!("Sign-in refused: {why}")), None)
        }
    }
}

async fn sign_out(State(page): State<Shared>, headers: HeaderMap) -> Response {
    // Another site cannot sign anyone out (nor clear the cookie).
    if !same_origin(&headers) {
        return respond(
            StatusCode::FORBIDDEN,
            Some("The sign-out came from another site: refused.\n".into()),
            None,
            None,
        );
    }
    if let Some(id) = session_id(&headers) {
        page.sessions.close(id);
    }
    respond(StatusCode::SEE_OTHER, None, Some("/login"), Some(clear_cookie()))
}

async fn not_found() -> Response {
    respond(StatusCode::NOT_FOUND, Some("not found\n".into()), None, None)
}

/// The page's routes.
fn router(page: Shared) -> Router {
    Router::new()
        .route("/", get(index))
        .route("/login", get(login_form).post(sign_in))
        .route("/logout", axum::routing::post(sign_out))
        .fallback(not_found)
        .with_state(page)
}

/// Connections served at once; more wait in the kernel's backlog.
const MAX_CONNECTIONS: usize = 64;
/// How long a client has to send a request's headers.
const HEADER_READ: Duration = Duration::from_secs(10);
/// How long a connection lives, kept alive or not: a page takes
/// milliseconds, and no client holds a connection (and its task) for long.
const CONNECTION_LIFETIME: Duration = Duration::from_secs(60);

/// Serves the status page of `raft` on `listener` over TLS with `tls`
/// until `shutdown` resolves; its connections end with it.
///
/// Its own accept loop rather than `axum::serve`: every connection has a
/// deadline for its headers and a lifetime, at most [`MAX_CONNECTIONS`] are
/// served at once, and all are aborted when the page stops (a demoted
/// manager keeps nothing of its page running).
pub(crate) async fn serve(
    raft: RaftNode,
    served_by: String,
    tls: Arc<rustls::ServerConfig>,
    listener: tokio::net::TcpListener,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    let local = listener.local_addr()?;
    let page = Arc::new(Page { raft, served_by, sessions: Sessions::default() });
    let app = router(page);
    let mut incoming = stackd_tls::tls_incoming(listener, tls);
    let permits = Arc::new(tokio::sync::Semaphore::new(MAX_CONNECTIONS));
    let mut connections = tokio::task::JoinSet::new();
    tracing::info!(addr = %local, "serving the status page (https)");
    tokio::pin!(shutdown);
    loop {
        // At the cap: wait for a connection to end before accepting more.
        let permit = tokio::select! {
            () = &mut shutdown => break,
            permit = permits.clone().acquire_owned() => match permit {
                Ok(p) => p,
                Err(_) => break,
            },
        };
        let stream = tokio::select! {
            () = &mut shutdown => break,
            Some(_) = connections.join_next(), if !connections.is_empty() => continue,
            next = incoming.next() => match next {
                Some(Ok(stream)) => stream,
                Some(Err(_)) => continue,
                None => break,
            },
        };
        let peer: SocketAddr = stream.get_ref().0.peer_addr().unwrap_or(local);
        let service = TowerToHyperService::new(app.clone().layer(axum::Extension(ConnectInfo(peer))));
        connections.spawn(async move {
            let _permit = permit;
            let conn = hyper::server::conn::http1::Builder::new()
                .timer(TokioTimer::new())
                .header_read_timeout(HEADER_READ)
                .serve_connection(TokioIo::new(stream), service);
            let _ = tokio::time::timeout(CONNECTION_LIFETIME, conn).await;
        });
    }
    connections.shutdown().await;
    Ok(())
}

#[cfg(test)]
#[path = "shell_tests.rs"]
mod tests;
