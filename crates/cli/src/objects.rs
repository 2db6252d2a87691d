//! `stackctl secret|config create|ls|rm`: configs and secrets kept by the
//! cluster outside any stack, which stacks use with `external: true`.
//! A secret's content is sent once and never shown again.

use std::io::Read;
use std::path::Path;

use anyhow::{Context, Result};
use serde::Serialize;
use stackd_core::model::{self, DataKind};
use stackd_proto::v1;

use crate::args::Global;
use crate::client::{connect, status};
use crate::output::print_rows;

fn wire(kind: DataKind) -> i32 {
    v1::DataKind::from(kind).into()
}

/// `stackctl secret|config create NAME FILE` (`-`: standard input).
pub async fn create(g: &Global, kind: DataKind, name: &str, file: &Path, labels: &[String]) -> Result<i32> {
    let data = if file == Path::new("-") {
        let mut buf = Vec::new();
        std::io::stdin().read_to_end(&mut buf).context("cannot read standard input")?;
        buf
    } else {
        std::fs::read(file).with_context(|| format!("cannot read {}", file.display()))?
    };
    let labels = labels
        .iter()
        .map(|l| match l.split_once('=') {
            Some((k, v)) => (k.to_string(), v.to_string()),
            None => (l.clone(), String::new()),
        })
        .collect();
    let mut c = connect(g).await?;
    let req = v1::CreateObjectRequest { kind: wire(kind), name: name.to_string(), data, labels };
    let resp = c
        .write(|mut c| {
            let req = req.clone();
            async move { c.create_object(req).await }
        })
        .await
        .map_err(status)?
        .into_inner();
    match resp.digest.as_str() {
        // The cluster does not show a secret's digest.
        "" => out!("Created {} {name}", kind.as_str()),
        digest => out!("Created {} {name} ({})", kind.as_str(), model::prefix(digest, 12)),
    }
    Ok(crate::EXIT_OK)
}

/// A row of `stackctl secret|config ls`.
#[derive(Serialize)]
struct ObjectRow {
    name: String,
    stack: String,
    digest: String,
    size: u64,
    used_by: String,
    created_at: u64,
    updated_at: u64,
}

/// `stackctl secret|config ls`.
pub async fn ls(g: &Global, kind: DataKind) -> Result<i32> {
    let mut c = connect(g).await?;
    let resp = c
        .read(|mut c| async move { c.list_objects(v1::ListObjectsRequest { kind: wire(kind), stale: g.stale }).await })
        .await
        .map_err(status)?
        .into_inner();
    let rows: Vec<ObjectRow> = resp
        .objects
        .into_iter()
        .map(|o| ObjectRow {
            name: o.name,
            stack: o.stack,
            digest: model::prefix(&o.digest, 12).to_string(),
            size: o.size,
            used_by: o.used_by.join(","),
            created_at: o.created_at,
            updated_at: o.updated_at,
        })
        .collect();
    print_rows(&rows, &["name", "stack", "digest", "size", "used_by", "updated_at"], g.output)?;
    Ok(crate::EXIT_OK)
}

/// `stackctl secret|config rm NAME…`.
pub async fn rm(g: &Global, kind: DataKind, names: &[String]) -> Result<i32> {
    let mut c = connect(g).await?;
    for name in names {
        c.write(|mut c| async move {
            c.remove_object(v1::RemoveObjectRequest { kind: wire(kind), name: name.clone() }).await
        })
        .await
        .map_err(status)?;
        out!("Removed {} {name}", kind.as_str());
    }
    Ok(crate::EXIT_OK)
}
