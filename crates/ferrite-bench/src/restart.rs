//! `ferrite-bench restart`: how long a server takes to stop on SIGTERM (draining its held
//! long-polls) and to start again with many shapes on disk, until it serves a read of an old
//! shape (same handle, no refetch).

use crate::{env, median, serve_process};
use anyhow::{anyhow, Result};
use futures_util::StreamExt;
use std::time::{Duration, Instant};

/// The most shapes a server started from here can hold open: one file each within half the
/// open-file limit it inherits (as the server itself keeps them, see its `max_shapes`).
pub fn shapes_that_fit() -> usize {
    let mut lim = libc::rlimit { rlim_cur: 0, rlim_max: 0 };
    // SAFETY: getrlimit only writes the struct we pass.
    if unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim) } != 0 {
        return usize::MAX;
    }
    (lim.rlim_max / 2) as usize
}

pub async fn restart(shapes: usize, runs: usize) -> Result<()> {
    let fit = shapes_that_fit();
    if shapes > fit {
        return Err(anyhow!(
            "{shapes} shapes need an open-file limit of at least {} (this machine's hard limit allows {fit} shapes): raise it, or run with --shapes {fit}",
            shapes * 2
        ));
    }
    let env = env().await?;
    let pg = ferrite_pg::connect::connect(&env.url).await.map_err(|e| anyhow!("{e}"))?;
    pg.batch_execute("CREATE TABLE items (id int PRIMARY KEY, n int NOT NULL); INSERT INTO items SELECT g, g FROM generate_series(1, 1000) g")
        .await?;
    let http = reqwest::Client::new();
    let max_shapes = shapes.to_string();
    let envs = [("FERRITE_MAX_SHAPES", max_shapes.as_str())];
    let (mut server, mut base) = serve_process(&env, "restart", &[], &envs).await?;
    // Many shapes, each read once to its end (made and on disk).
    let started = Instant::now();
    let made: Vec<(String, String)> = futures_util::stream::iter(0..shapes)
        .map(|i| {
            let (http, base) = (http.clone(), base.clone());
            async move {
                let url =
                    format!("{base}/v1/shape?table=items&where=n%20%3E%3D%20{i}%20AND%20n%20%3C%20{}&offset=-1", i + 3);
                let r = http.get(&url).send().await?;
                if r.status() != 200 {
                    return Err(anyhow!("{url}: {}", r.status()));
                }
                let h = |k: &str| r.headers().get(k).and_then(|v| v.to_str().ok()).unwrap_or_default().to_string();
                Ok::<_, anyhow::Error>((h("electric-handle"), h("electric-offset")))
            }
        })
        .buffered(16)
        .collect::<Vec<_>>()
        .await
        .into_iter()
        .collect::<Result<_>>()?;
    println!("restart: {shapes} shapes made in {:.1} s", started.elapsed().as_secs_f64());
    let (mut stops, mut starts) = (vec![], vec![]);
    let (handle, offset) = made[made.len() / 2].clone();
    for _ in 0..runs {
        // A held long-poll, then SIGTERM: time until the process has exited.
        let held = tokio::spawn(
            http.get(format!(
                "{base}/v1/shape?table=items&where=n%20%3E%3D%200%20AND%20n%20%3C%203&handle={}&offset={}&live=true",
                made[0].0, made[0].1
            ))
            .send(),
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
        let t0 = Instant::now();
        std::process::Command::new("kill").arg("-TERM").arg(server.0.id().to_string()).status()?;
        let status = server.0.wait()?;
        stops.push(t0.elapsed().as_secs_f64() * 1000.0);
        if !status.success() {
            return Err(anyhow!("the server exited with {status}"));
        }
        let answered = held.await?.map_err(|e| anyhow!("the held long-poll was cut: {e}"))?;
        if answered.status() != 200 {
            return Err(anyhow!("the held long-poll got {}", answered.status()));
        }
        // Start again: time until an old shape is served with its handle.
        let t0 = Instant::now();
        let (next, next_base) = serve_process(&env, "restart", &[], &envs).await?;
        (server, base) = (next, next_base);
        let (i, j) = (made.len() / 2, made.len() / 2 + 3);
        let url = format!(
            "{base}/v1/shape?table=items&where=n%20%3E%3D%20{i}%20AND%20n%20%3C%20{j}&handle={handle}&offset={offset}"
        );
        loop {
            if let Ok(r) = http.get(&url).send().await {
                match r.status().as_u16() {
                    200 => break,
                    409 => return Err(anyhow!("the restarted server lost the shape (409)")),
                    _ => {}
                }
            }
            if t0.elapsed() > Duration::from_secs(120) {
                return Err(anyhow!("the restarted server did not serve the shape within 120 s"));
            }
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        starts.push(t0.elapsed().as_secs_f64() * 1000.0);
    }
    drop(server);
    println!(
        "restart: SIGTERM → exited (a held long-poll answered first): median {:.0} ms; start with {shapes} shapes on disk → an old shape served (same handle): median {:.0} ms (runs: {})",
        median(stops.clone()),
        median(starts.clone()),
        starts.iter().map(|s| format!("{s:.0}")).collect::<Vec<_>>().join(", ")
    );
    Ok(())
}
