//! Client tokens: create, list, revoke. A token's secret is shown once, on
//! creation; the state keeps only its digest.

use stackd_core::security::{ClientToken, TokenRole};
use stackd_core::{Command, Refusal};
use stackd_proto::v1;
use tonic::Status;

use super::Control;
use crate::now_ms;
use crate::refusal::refused;

/// A wire token role.
fn token_role(role: i32) -> Result<TokenRole, Status> {
    match v1::TokenRole::try_from(role) {
        Ok(v1::TokenRole::Admin) => Ok(TokenRole::Admin),
        Ok(v1::TokenRole::Deployer) => Ok(TokenRole::Deployer),
        Ok(v1::TokenRole::Viewer) => Ok(TokenRole::Viewer),
        _ => Err(refused(Refusal::invalid("the token role must be admin, deployer or viewer"))),
    }
}

fn token_info(t: &ClientToken) -> v1::TokenInfo {
    let role = match t.role {
        TokenRole::Admin => v1::TokenRole::Admin,
        TokenRole::Deployer => v1::TokenRole::Deployer,
        TokenRole::Viewer => v1::TokenRole::Viewer,
    };
    v1::TokenInfo {
        id: t.id.clone(),
        name: t.name.clone(),
        role: role.into(),
        stacks: t.stacks.clone(),
        created_at: t.created_at,
    }
}

/// `CreateToken`: a new secret, checked (valid, its name free) before
/// proposing, so that a bad request never reaches the log.
pub(super) async fn create(ctl: &Control, r: v1::CreateTokenRequest) -> Result<v1::CreateTokenResponse, Status> {
    let role = token_role(r.role)?;
    let secret = stackd_tls::ClientToken::generate();
    let at = now_ms();
    let token = ClientToken {
        id: secret.id().to_string(),
        name: r.name,
        role,
        stacks: r.stacks,
        secret_sha256: secret.secret_sha256(),
        created_at: at,
    };
    token.validate().map_err(|e| refused(e.into()))?;
    ctl.read(false, |s| s.security.check_new_token(&token)).await?.map_err(|e| refused(e.into()))?;
    let info = token_info(&token);
    ctl.propose(Command::CreateToken { token, at }).await?;
    tracing::info!(token = %info.id, name = %info.name, "client token created");
    Ok(v1::CreateTokenResponse { token: secret.reveal(), info: Some(info) })
}

/// `ListTokens`: never a secret.
pub(super) async fn list(ctl: &Control, r: v1::ListTokensRequest) -> Result<v1::ListTokensResponse, Status> {
    let tokens = ctl.read(r.stale, |s| s.security.tokens.values().map(token_info).collect()).await?;
    Ok(v1::ListTokensResponse { tokens })
}

/// `RevokeToken`, by id or name.
pub(super) async fn revoke(ctl: &Control, r: v1::RevokeTokenRequest) -> Result<v1::RevokeTokenResponse, Status> {
    let key = r.token;
    let id = ctl.read(false, |s| s.security.token(&key).map(|t| t.id.clone())).await?.ok_or_else(|| {
        refused(Refusal::not_found(format!("no token {key:?} (give its id or name, see `stackctl token ls`)")))
    })?;
    ctl.propose(Command::RevokeToken { id: id.clone(), at: now_ms() }).await?;
    tracing::info!(token = %id, "client token revoked");
    Ok(v1::RevokeTokenResponse { id })
}
