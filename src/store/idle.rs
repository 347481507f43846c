//! Read deadlines for downloads: fails a read that makes no progress for a while, and
//! (optionally) a body that crawls below a minimum average rate, however long the whole
//! download takes (a server that stalls or trickles mid-body must not hold a fetch).

use std::future::Future;
use std::io;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;

use tokio::io::{AsyncRead, ReadBuf};
use tokio::time::{Instant, Sleep};

/// Fails a read that makes no progress for `idle`, however long the whole download takes;
/// with [`IdleTimeout::with_min_rate`], also a body whose average rate falls too low.
pub struct IdleTimeout<R> {
    inner: R,
    idle: Duration,
    timer: Pin<Box<Sleep>>,
    /// `(grace, bytes per second)`: after `grace`, at least this average since `start`.
    min_rate: Option<(Duration, u64)>,
    start: Instant,
    bytes: u64,
}

impl<R> IdleTimeout<R> {
    pub fn new(inner: R, idle: Duration) -> Self {
        IdleTimeout {
            inner,
            idle,
            timer: Box::pin(tokio::time::sleep(idle)),
            min_rate: None,
            start: Instant::now(),
            bytes: 0,
        }
    }

    /// Also fails the body once fewer than `bytes_per_sec` × (elapsed − `grace`) bytes have
    /// arrived: a link so slow that fetching costs more than rebuilding gives up early
    /// instead of trickling on (each read still makes progress, so `idle` never fires).
    pub fn with_min_rate(mut self, grace: Duration, bytes_per_sec: u64) -> Self {
        self.min_rate = Some((grace, bytes_per_sec.max(1)));
        let next = self.deadline();
        self.timer.as_mut().reset(next);
        self
    }

    /// When the body fails unless more arrives: the idle deadline or, sooner, the moment
    /// the average rate drops below the minimum.
    fn deadline(&self) -> Instant {
        let idle = Instant::now() + self.idle;
        match self.min_rate_deadline() {
            Some(slow) => idle.min(slow),
            None => idle,
        }
    }

    fn min_rate_deadline(&self) -> Option<Instant> {
        self.min_rate.map(|(grace, rate)| {
            self.start + grace + Duration::from_secs_f64(self.bytes as f64 / rate as f64)
        })
    }
}

impl<R: AsyncRead + Unpin> AsyncRead for IdleTimeout<R> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = &mut *self;
        let before = buf.filled().len();
        match Pin::new(&mut this.inner).poll_read(cx, buf) {
            Poll::Ready(r) => {
                this.bytes += (buf.filled().len() - before) as u64;
                let next = this.deadline();
                this.timer.as_mut().reset(next);
                Poll::Ready(r)
            }
            Poll::Pending => match this.timer.as_mut().poll(cx) {
                Poll::Ready(()) => {
                    let msg = match (this.min_rate, this.min_rate_deadline()) {
                        (Some((_, rate)), Some(slow)) if slow <= Instant::now() => format!(
                            "download slower than {} KiB/s ({} bytes in {:?})",
                            rate / 1024,
                            this.bytes,
                            this.start.elapsed()
                        ),
                        _ => format!("download stalled for {:?}", this.idle),
                    };
                    Poll::Ready(Err(io::Error::new(io::ErrorKind::TimedOut, msg)))
                }
                Poll::Pending => Poll::Pending,
            },
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::AsyncReadExt;

    #[tokio::test]
    async fn a_stalled_download_times_out() {
        let (_writer, reader) = tokio::io::duplex(64);
        let mut r = IdleTimeout::new(reader, Duration::from_millis(50));
        let start = std::time::Instant::now();
        let e = r.read_u8().await.unwrap_err();
        assert_eq!(e.kind(), io::ErrorKind::TimedOut);
        assert!(start.elapsed() < Duration::from_secs(5));
    }

    #[tokio::test]
    async fn a_slow_but_moving_download_does_not() {
        let (mut w, reader) = tokio::io::duplex(64);
        let mut r = IdleTimeout::new(reader, Duration::from_millis(200));
        let writer = tokio::spawn(async move {
            use tokio::io::AsyncWriteExt;
            for i in 0..6u8 {
                tokio::time::sleep(Duration::from_millis(80)).await;
                w.write_all(&[i]).await.unwrap();
            }
        });
        let mut got = Vec::new();
        r.read_to_end(&mut got).await.unwrap();
        assert_eq!(got, [0, 1, 2, 3, 4, 5]);
        writer.await.unwrap();
    }

    #[tokio::test]
    async fn a_trickling_download_fails_once_below_the_minimum_rate() {
        let (mut w, reader) = tokio::io::duplex(64);
        // 1 KB/s against a 10 KB/s minimum after 200 ms: fails early, though each read
        // makes progress well within the idle limit.
        let mut r = IdleTimeout::new(reader, Duration::from_secs(10))
            .with_min_rate(Duration::from_millis(200), 10_000);
        let writer = tokio::spawn(async move {
            use tokio::io::AsyncWriteExt;
            for _ in 0..100 {
                tokio::time::sleep(Duration::from_millis(50)).await;
                if w.write_all(&[0u8; 50]).await.is_err() {
                    return;
                }
            }
        });
        let start = std::time::Instant::now();
        let mut got = Vec::new();
        let e = r.read_to_end(&mut got).await.unwrap_err();
        assert_eq!(e.kind(), io::ErrorKind::TimedOut);
        assert!(e.to_string().contains("slower than"), "{e}");
        assert!(start.elapsed() < Duration::from_secs(3));
        assert!(!got.is_empty(), "it did make progress");
        drop(r);
        writer.await.unwrap();
    }

    #[tokio::test]
    async fn a_download_above_the_minimum_rate_completes() {
        let (mut w, reader) = tokio::io::duplex(1 << 16);
        let mut r = IdleTimeout::new(reader, Duration::from_secs(10))
            .with_min_rate(Duration::from_millis(100), 10_000);
        let writer = tokio::spawn(async move {
            use tokio::io::AsyncWriteExt;
            // 4 KB every 50 ms: 80 KB/s, for 0.5 s.
            for _ in 0..10 {
                tokio::time::sleep(Duration::from_millis(50)).await;
                w.write_all(&[7u8; 4096]).await.unwrap();
            }
        });
        let mut got = Vec::new();
        r.read_to_end(&mut got).await.unwrap();
        assert_eq!(got.len(), 40960);
        writer.await.unwrap();
    }
}
