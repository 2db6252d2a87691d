//! `stackctl token create|ls|rm`: client tokens (admin only). A token's
//! text is printed once, when it is created; the cluster keeps only the
//! SHA-256 of its secret.

use anyhow::Result;
use serde::Serialize;
use stackd_proto::v1;

use crate::args::{Global, TokenRoleArg};
use crate::client::{connect, status};
use crate::output::print_rows;

/// A row of `stackctl token ls`.
#[derive(Serialize)]
struct TokenRow {
    id: String,
    name: String,
    role: String,
    stacks: String,
    created_at: u64,
}

fn role_name(role: i32) -> String {
    match v1::TokenRole::try_from(role) {
        Ok(v1::TokenRole::Admin) => "admin",
        Ok(v1::TokenRole::Deployer) => "deployer",
        Ok(v1::TokenRole::Viewer) => "viewer",
        _ => "unknown",
    }
    .to_string()
}

/// `stackctl token create NAME --role R [--stack S]…`: the token alone on
/// standard output.
pub async fn create(g: &Global, name: &str, role: TokenRoleArg, stacks: &[String]) -> Result<i32> {
    let wire = match role {
        TokenRoleArg::Admin => v1::TokenRole::Admin,
        TokenRoleArg::Deployer => v1::TokenRole::Deployer,
        TokenRoleArg::Viewer => v1::TokenRole::Viewer,
    };
    let mut c = connect(g).await?;
    let req = v1::CreateTokenRequest { name: name.to_string(), role: wire.into(), stacks: stacks.to_vec() };
    let r = c
        .write(|mut c| {
            let req = req.clone();
            async move { c.create_token(req).await }
        })
        .await
        .map_err(status)?
        .into_inner();
    let id = r.info.map(|i| i.id).unwrap_or_default();
    eprintln!("Created token {name} (id {id}); it is shown once, keep it now.");
    out!("{}", r.token);
    Ok(crate::EXIT_OK)
}

/// `stackctl token ls`.
pub async fn ls(g: &Global) -> Result<i32> {
    let mut c = connect(g).await?;
    let r = c
        .read(|mut c| async move { c.list_tokens(v1::ListTokensRequest { stale: g.stale }).await })
        .await
        .map_err(status)?
        .into_inner();
    let rows: Vec<TokenRow> = r
        .tokens
        .into_iter()
        .map(|t| TokenRow {
            id: t.id,
            name: t.name,
            role: role_name(t.role),
            stacks: t.stacks.join(","),
            created_at: t.created_at,
        })
        .collect();
    print_rows(&rows, &["id", "name", "role", "stacks", "created_at"], g.output)?;
    Ok(crate::EXIT_OK)
}

/// `stackctl token rm ID|NAME…`: revokes each; stops at the first refusal.
pub async fn rm(g: &Global, tokens: &[String]) -> Result<i32> {
    let mut c = connect(g).await?;
    for t in tokens {
        let req = v1::RevokeTokenRequest { token: t.clone() };
        // Revoking twice is harmless (the second finds nothing: not found).
        let r = c
            .write(|mut c| {
                let req = req.clone();
                async move { c.revoke_token(req).await }
            })
            .await
            .map_err(status)?
            .into_inner();
        out!("Revoked token {t} ({})", r.id);
    }
    Ok(crate::EXIT_OK)
}
