//! Paths written in stack files, resolved lexically (no filesystem access):
//! relative to the stack's directory, `~` to the home directory.

/// The directory part of `path` (`deploy/stack.yml` → `deploy`, `stack.yml` → empty).
pub(crate) fn dirname(path: &str) -> &str {
    match path.rfind('/') {
        Some(0) => "/",
        Some(i) => &path[..i],
        None => "",
    }
}

/// `path` joined to `base` unless it is absolute, then cleaned: `.` parts
/// dropped, `..` parts applied (never above the root of an absolute path;
/// kept at the front of a relative one), repeated slashes folded.
pub(crate) fn join(base: &str, path: &str) -> String {
    let absolute = path.starts_with('/') || (base.starts_with('/') && !path.starts_with('/'));
    let joined = if path.starts_with('/') || base.is_empty() { path.to_string() } else { format!("{base}/{path}") };
    let mut parts: Vec<&str> = Vec::new();
    for part in joined.split('/') {
        match part {
            "" | "." => {}
            ".." => match parts.last() {
                Some(&last) if last != ".." => {
                    parts.pop();
                }
                _ if absolute => {}
                _ => parts.push(".."),
            },
            p => parts.push(p),
        }
    }
    let body = parts.join("/");
    match (absolute, body.is_empty()) {
        (true, _) => format!("/{body}"),
        (false, true) => ".".to_string(),
        (false, false) => body,
    }
}

/// `~` or `~/…` with the home directory `home` in front; other paths as they are.
/// `None` when the path starts with `~` and there is no home directory.
pub(crate) fn expand_home(path: &str, home: Option<&str>) -> Option<String> {
    match path.strip_prefix('~') {
        Some(rest) if rest.is_empty() || rest.starts_with('/') => home.map(|h| format!("{h}{rest}")),
        _ => Some(path.to_string()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dirname_of_names() {
        assert_eq!(dirname("stack.yml"), "");
        assert_eq!(dirname("deploy/stack.yml"), "deploy");
        assert_eq!(dirname("/srv/app/stack.yml"), "/srv/app");
        assert_eq!(dirname("/stack.yml"), "/");
    }

    #[test]
    fn join_cleans() {
        assert_eq!(join("/srv/app", "./data"), "/srv/app/data");
        assert_eq!(join("/srv/app", "."), "/srv/app");
        assert_eq!(join("/srv/app", "../x//y/"), "/srv/x/y");
        assert_eq!(join("/srv/app", "/etc/x"), "/etc/x");
        assert_eq!(join("/", "../../x"), "/x");
        assert_eq!(join("", "web.env"), "web.env");
        assert_eq!(join("deploy", "../web.env"), "web.env");
        assert_eq!(join("deploy", "../../web.env"), "../web.env");
        assert_eq!(join("", "."), ".");
    }

    #[test]
    fn home_expands() {
        assert_eq!(expand_home("~/data", Some("/root")).as_deref(), Some("/root/data"));
        assert_eq!(expand_home("~", Some("/root")).as_deref(), Some("/root"));
        assert_eq!(expand_home("~user/data", Some("/root")).as_deref(), Some("~user/data"));
        assert_eq!(expand_home("~/data", None), None);
        assert_eq!(expand_home("./data", None).as_deref(), Some("./data"));
    }
}
