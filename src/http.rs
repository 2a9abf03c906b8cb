//! The plain HTTPS client for the small JSON APIs stagebot calls outside the GitHub App client
//! (Sentry, GitHub's OAuth endpoints): rustls with the system's roots, HTTP/1.1, `http://`
//! allowed (the fakes and GitHub Enterprise Server behind a proxy).

/// A client sending whole (`Full`) bodies.
pub type HttpClient = hyper_util::client::legacy::Client<
    hyper_rustls::HttpsConnector<hyper_util::client::legacy::connect::HttpConnector>,
    http_body_util::Full<hyper::body::Bytes>,
>;

/// A new [`HttpClient`]; the error says why TLS could not be set up.
pub fn https_client() -> Result<HttpClient, String> {
    let https = hyper_rustls::HttpsConnectorBuilder::new()
        .with_native_roots()
        .map_err(|e| format!("no TLS root certificates: {e}"))?
        .https_or_http()
        .enable_http1()
        .build();
    Ok(
        hyper_util::client::legacy::Client::builder(hyper_util::rt::TokioExecutor::new())
            .build(https),
    )
}
