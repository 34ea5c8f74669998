//! A webhook receiver for benches: real HTTP on 127.0.0.1 that answers at
//! once (or never), and records when each notice arrived, by referral and
//! status, from the JSON body the platform sends (`notifications::body`).
//! Many sinks can share one [`Receipts`] log.

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// One request a sink received.
#[derive(Clone, Debug)]
pub struct Receipt {
    /// The sink's tag (its URL's last path segment).
    pub sink: String,
    pub notification_id: String,
    pub referral_id: String,
    /// As the body spells it, e.g. `REFERRAL_STATUS_UNDER_ASSESSMENT`.
    pub status: String,
    pub at: Instant,
}

/// Receipts of every sink sharing the log.
#[derive(Clone, Default)]
pub struct Receipts(Arc<Mutex<Vec<Receipt>>>);

impl Receipts {
    pub fn snapshot(&self) -> Vec<Receipt> {
        self.0.lock().unwrap().clone()
    }

    pub fn len(&self) -> usize {
        self.0.lock().unwrap().len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    fn push(&self, receipt: Receipt) {
        self.0.lock().unwrap().push(receipt);
    }
}

/// How a sink answers.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Answer {
    /// 204 at once.
    NoContent,
    /// Accepts the connection and reads the request, then never answers.
    Hang,
}

/// A listening sink; stops when dropped.
pub struct Sink {
    pub url: String,
    task: tokio::task::JoinHandle<()>,
}

impl Sink {
    /// Starts a sink tagged `tag` on a port of its own.
    pub async fn start(tag: &str, answer: Answer, receipts: Receipts) -> std::io::Result<Self> {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
        let url = format!("http://{}/hook/{tag}", listener.local_addr()?);
        let tag = tag.to_owned();
        let app = axum::Router::new().route(
            "/hook/{tag}",
            axum::routing::post(move |body: axum::body::Bytes| {
                let (receipts, tag) = (receipts.clone(), tag.clone());
                async move {
                    let at = Instant::now();
                    let body: serde_json::Value = serde_json::from_slice(&body).unwrap_or_default();
                    let text = |key: &str| body[key].as_str().unwrap_or_default().to_owned();
                    receipts.push(Receipt {
                        sink: tag,
                        notification_id: text("notification_id"),
                        referral_id: text("referral_id"),
                        status: text("status"),
                        at,
                    });
                    if answer == Answer::Hang {
                        tokio::time::sleep(Duration::from_secs(24 * 3600)).await;
                    }
                    axum::http::StatusCode::NO_CONTENT
                }
            }),
        );
        let task = tokio::spawn(async move {
            let _ = axum::serve(listener, app).await;
        });
        Ok(Self { url, task })
    }
}

impl Drop for Sink {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// A URL on 127.0.0.1 where nothing listens (connection refused), and the
/// socket that holds its port: bound but not listening, so connecting is
/// refused and no later listener can take the port while it is kept.
pub fn refused_url(tag: &str) -> std::io::Result<(String, tokio::net::TcpSocket)> {
    let socket = tokio::net::TcpSocket::new_v4()?;
    socket.bind("127.0.0.1:0".parse().expect("an address"))?;
    let port = socket.local_addr()?.port();
    Ok((format!("http://127.0.0.1:{port}/hook/{tag}"), socket))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_sink_records_the_referral_and_status_of_what_it_is_sent() {
        let receipts = Receipts::default();
        let sink = Sink::start("a1", Answer::NoContent, receipts.clone())
            .await
            .unwrap();
        let (host_port, path) = sink
            .url
            .strip_prefix("http://")
            .unwrap()
            .split_once('/')
            .unwrap();
        let body = r#"{"notification_id":"n1","referral_id":"r1","status":"S"}"#;
        let request = format!(
            "POST /{path} HTTP/1.1\r\nhost: {host_port}\r\ncontent-type: application/json\r\n\
             content-length: {}\r\nconnection: close\r\n\r\n{body}",
            body.len()
        );
        use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
        let mut stream = tokio::net::TcpStream::connect(host_port).await.unwrap();
        stream.write_all(request.as_bytes()).await.unwrap();
        let mut answer = String::new();
        stream.read_to_string(&mut answer).await.unwrap();
        assert!(answer.starts_with("HTTP/1.1 204"), "{answer}");
        let got = receipts.snapshot();
        assert_eq!(got.len(), 1);
        assert_eq!(
            (
                got[0].sink.as_str(),
                got[0].referral_id.as_str(),
                got[0].status.as_str()
            ),
            ("a1", "r1", "S")
        );
    }
}
