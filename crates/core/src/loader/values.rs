//! Parsers for the string forms of compose values: integers, durations,
//! shell-like commands, short port and volume syntaxes.
//!
//! Each returns the value or a message (without position: the caller adds it).

use crate::model::{PortConfig, Protocol, PublishMode};

/// A non-negative decimal integer (`+` allowed).
pub(crate) fn parse_uint(text: &str) -> Option<u64> {
    let t = text.trim();
    let t = t.strip_prefix('+').unwrap_or(t);
    if t.is_empty() || !t.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    t.parse().ok()
}

/// A compose duration (Go's `time.ParseDuration` form: `1h2m3s`, `1.5s`,
/// `500ms`, `10us`), in milliseconds, rounded down. A unit is required,
/// except for `0`.
pub(crate) fn parse_duration(text: &str) -> Result<u64, String> {
    let t = text.trim();
    let bad = || format!("must be a duration like 10s, 1m30s or 500ms, got {text:?}");
    if t == "0" || t == "+0" {
        return Ok(0);
    }
    if t.starts_with('-') {
        return Err(format!("must not be negative, got {text:?}"));
    }
    let t = t.strip_prefix('+').unwrap_or(t);
    if t.is_empty() {
        return Err(bad());
    }
    if t.bytes().all(|b| b.is_ascii_digit()) {
        return Err(format!("must be a duration with a unit (like {t}s), got {text}"));
    }
    let mut total_ns: u128 = 0;
    let mut rest = t;
    while !rest.is_empty() {
        let int_len = rest.bytes().take_while(u8::is_ascii_digit).count();
        let int_part = &rest[..int_len];
        rest = &rest[int_len..];
        let mut frac_part = "";
        if let Some(after) = rest.strip_prefix('.') {
            let frac_len = after.bytes().take_while(u8::is_ascii_digit).count();
            frac_part = &after[..frac_len];
            rest = &after[frac_len..];
        }
        if int_part.is_empty() && frac_part.is_empty() {
            return Err(bad());
        }
        let unit_len = rest.find(|c: char| c.is_ascii_digit() || c == '.').unwrap_or(rest.len());
        let unit: u128 = match &rest[..unit_len] {
            "ns" => 1,
            "us" | "µs" | "μs" => 1_000,
            "ms" => 1_000_000,
            "s" => 1_000_000_000,
            "m" => 60_000_000_000,
            "h" => 3_600_000_000_000,
            "" => return Err(format!("must have a unit after each number (like 10s), got {text:?}")),
            _ => return Err(bad()),
        };
        rest = &rest[unit_len..];
        let int: u128 = if int_part.is_empty() { 0 } else { int_part.parse().map_err(|_| bad())? };
        let mut part = int.checked_mul(unit).ok_or_else(|| format!("is too large: {text}"))?;
        // The fraction, to nanosecond precision.
        let mut scale = unit;
        for d in frac_part.bytes().take(20) {
            scale /= 10;
            part += u128::from(d - b'0') * scale;
        }
        total_ns = total_ns.checked_add(part).ok_or_else(|| format!("is too large: {text}"))?;
    }
    u64::try_from(total_ns / 1_000_000).map_err(|_| format!("is too large: {text}"))
}

/// Splits a command string into words like a POSIX shell would, without
/// expansions: whitespace separates words, `'…'` is literal, `"…"` allows
/// `\"`, `\\`, `\$` and `` \` `` escapes, and `\` escapes one character outside quotes.
pub(crate) fn split_shell(text: &str) -> Result<Vec<String>, String> {
    let mut words = Vec::new();
    let mut cur = String::new();
    let mut in_word = false;
    let mut chars = text.chars();
    while let Some(c) = chars.next() {
        match c {
            c if c.is_whitespace() => {
                if in_word {
                    words.push(std::mem::take(&mut cur));
                    in_word = false;
                }
            }
            '\'' => {
                in_word = true;
                loop {
                    match chars.next() {
                        Some('\'') => break,
                        Some(c) => cur.push(c),
                        None => return Err("unterminated single quote".to_string()),
                    }
                }
            }
            '"' => {
                in_word = true;
                loop {
                    match chars.next() {
                        Some('"') => break,
                        Some('\\') => match chars.next() {
                            Some(e @ ('"' | '\\' | '$' | '`')) => cur.push(e),
                            Some('\n') => {}
                            Some(other) => {
                                cur.push('\\');
                                cur.push(other);
                            }
                            None => return Err("unterminated double quote".to_string()),
                        },
                        Some(c) => cur.push(c),
                        None => return Err("unterminated double quote".to_string()),
                    }
                }
            }
            '\\' => {
                in_word = true;
                match chars.next() {
                    Some('\n') => {}
                    Some(c) => cur.push(c),
                    None => cur.push('\\'),
                }
            }
            c => {
                in_word = true;
                cur.push(c);
            }
        }
    }
    if in_word {
        words.push(cur);
    }
    Ok(words)
}

/// A port number 1-65535; `what` names it in the message.
pub(crate) fn parse_port_number(text: &str, what: &str) -> Result<u16, String> {
    let t = text.trim();
    if t.contains('-') && t.split('-').all(|p| parse_uint(p).is_some()) {
        return Err(format!(
            "a {what} port range is only allowed in the short syntax, like \"8000-8002:80-82\", got {t:?}"
        ));
    }
    match parse_uint(t).and_then(|n| u16::try_from(n).ok()) {
        Some(n) if n > 0 => Ok(n),
        _ => Err(format!("{what} port must be a number 1-65535, got {t:?}")),
    }
}

/// A protocol name.
pub(crate) fn parse_protocol(text: &str) -> Result<Protocol, String> {
    match text.to_ascii_lowercase().as_str() {
        "tcp" => Ok(Protocol::Tcp),
        "udp" => Ok(Protocol::Udp),
        "sctp" => Ok(Protocol::Sctp),
        _ => Err(format!("protocol must be tcp, udp or sctp, got {text:?}")),
    }
}

/// A host IP (brackets around IPv6 allowed); returned without brackets.
pub(crate) fn parse_host_ip(text: &str) -> Result<String, String> {
    let ip = text.strip_prefix('[').and_then(|t| t.strip_suffix(']')).unwrap_or(text);
    match ip.parse::<std::net::IpAddr>() {
        Ok(_) => Ok(ip.to_string()),
        Err(_) => Err(format!("host IP must be an IP address, got {text:?}")),
    }
}

/// The most ports one short-syntax range may expand to.
pub(crate) const MAX_PORT_RANGE: usize = 1024;

/// A port or an inclusive range `8000-8010` (1-65535 each, first ≤ last).
fn parse_port_range(text: &str, what: &str) -> Result<(u16, u16), String> {
    let Some((a, b)) = text.split_once('-') else {
        let p = parse_port_number(text, what)?;
        return Ok((p, p));
    };
    if b.contains('-') {
        return Err(format!("{what} range {text:?} must be FIRST-LAST, like 8000-8002"));
    }
    let (a, b) = (parse_port_number(a, what)?, parse_port_number(b, what)?);
    if a > b {
        return Err(format!("{what} range {text:?} ends before it starts"));
    }
    if usize::from(b - a) >= MAX_PORT_RANGE {
        return Err(format!("{what} range {text:?} has more than {MAX_PORT_RANGE} ports"));
    }
    Ok((a, b))
}

/// The short port syntax: `80`, `8080:80`, `127.0.0.1:8080:80`,
/// `127.0.0.1::80`, `[::1]:8080:80`, each with an optional `/udp`, and
/// ranges (`3000-3005`, `8000-8002:80-82`), which give one port each.
pub(crate) fn parse_port_short(text: &str) -> Result<Vec<PortConfig>, String> {
    let wrap = |why: String| format!("invalid port {text:?}: {why}");
    let (rest, protocol) = match text.trim().rsplit_once('/') {
        Some((r, p)) => (r, parse_protocol(p).map_err(wrap)?),
        None => (text.trim(), Protocol::Tcp),
    };
    let (host, target) = match rest.rsplit_once(':') {
        Some((h, t)) => (Some(h), t),
        None => (None, rest),
    };
    let targets = parse_port_range(target, "target").map_err(wrap)?;
    let (host_ip, published) = match host {
        None => (String::new(), None),
        Some(h) => {
            let (ip, p) = match h.rsplit_once(':') {
                Some((ip, p)) => (parse_host_ip(ip).map_err(wrap)?, p),
                None => (String::new(), h),
            };
            let published = if p.is_empty() { None } else { Some(parse_port_range(p, "published").map_err(wrap)?) };
            (ip, published)
        }
    };
    let count = targets.1 - targets.0;
    if let Some(published) = published
        && published.1 - published.0 != count
    {
        let why = if count == 0 {
            "a published range with one target port means a port picked at random on each node; \
             give a target range of the same length (8000-8002:80-82) or one published port"
        } else {
            "the published and target ranges must have the same length"
        };
        return Err(wrap(why.to_string()));
    }
    Ok((0..=count)
        .map(|i| PortConfig {
            target: targets.0 + i,
            published: published.map(|p| p.0 + i),
            protocol,
            mode: PublishMode::Ingress,
            host_ip: host_ip.clone(),
            proxy_protocol: false,
        })
        .collect())
}

/// The parts of a short volume entry `[SOURCE:]TARGET[:OPTIONS]`.
#[derive(Debug, PartialEq, Eq)]
pub(crate) struct ShortVolume<'a> {
    /// Volume name or host path, when given.
    pub source: Option<&'a str>,
    /// Path in the container.
    pub target: &'a str,
    /// Comma-separated options (`ro`, `rw`, `z`, `nocopy`, …).
    pub options: Vec<&'a str>,
}

/// Splits a short volume entry.
pub(crate) fn parse_volume_short(text: &str) -> Result<ShortVolume<'_>, String> {
    let parts: Vec<&str> = text.split(':').collect();
    let (source, target, options) = match parts.as_slice() {
        [t] => (None, *t, ""),
        [s, t] => (Some(*s), *t, ""),
        [s, t, o] => (Some(*s), *t, *o),
        _ => return Err(format!("invalid volume {text:?}: expected [SOURCE:]TARGET[:MODE]")),
    };
    if target.is_empty() || source.is_some_and(str::is_empty) {
        return Err(format!("invalid volume {text:?}: expected [SOURCE:]TARGET[:MODE]"));
    }
    let options = options.split(',').filter(|o| !o.is_empty()).collect();
    Ok(ShortVolume { source, target, options })
}

/// Parses a compose byte size: a number with an optional unit `b`, `k`/`kb`,
/// `m`/`mb`, `g`/`gb` (case-insensitive, powers of 1024).
pub(crate) fn parse_bytes(text: &str) -> Result<u64, String> {
    let t = text.trim().to_ascii_lowercase();
    let digits = t.bytes().take_while(|b| b.is_ascii_digit() || *b == b'.').count();
    let (num, unit) = t.split_at(digits);
    let factor: u64 = match unit.trim() {
        "" | "b" => 1,
        "k" | "kb" => 1 << 10,
        "m" | "mb" => 1 << 20,
        "g" | "gb" => 1 << 30,
        "t" | "tb" => 1 << 40,
        u => return Err(format!("{text:?} is not a byte size: unknown unit {u:?} (use b, k, m or g)")),
    };
    let n: f64 = num.parse().map_err(|_| format!("{text:?} is not a byte size (e.g. 512m, 1g)"))?;
    let bytes = n * factor as f64;
    if !bytes.is_finite() || bytes < 0.0 || bytes > u64::MAX as f64 {
        return Err(format!("{text:?} is out of range"));
    }
    Ok(bytes.round() as u64)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations() {
        let ok = [
            ("0", 0),
            ("10s", 10_000),
            ("500ms", 500),
            ("1.5s", 1_500),
            ("1h2m3s", 3_723_000),
            ("1m30s", 90_000),
            ("2h", 7_200_000),
            (".5s", 500),
            ("1500us", 1),
            ("100ns", 0),
            ("1µs", 0),
        ];
        for (text, ms) in ok {
            assert_eq!(parse_duration(text), Ok(ms), "{text}");
        }
        assert_eq!(parse_duration("10"), Err("must be a duration with a unit (like 10s), got 10".into()));
        assert_eq!(parse_duration("-1s"), Err("must not be negative, got \"-1s\"".into()));
        assert_eq!(parse_duration("10x"), Err("must be a duration like 10s, 1m30s or 500ms, got \"10x\"".into()));
        assert!(parse_duration("1s5").is_err());
        assert!(parse_duration("").is_err());
        assert!(parse_duration("s").is_err());
        assert!(parse_duration(".s").is_err());
        assert!(parse_duration("99999999999999999999999h").is_err());
    }

    #[test]
    fn shell_words() {
        let s = |t: &str| split_shell(t).expect("splits");
        assert_eq!(s("echo hello  world"), ["echo", "hello", "world"]);
        assert_eq!(s("sh -c 'echo $A && ls'"), ["sh", "-c", "echo $A && ls"]);
        assert_eq!(s(r#"a "b c" d\ e "x\"y""#), ["a", "b c", "d e", "x\"y"]);
        assert_eq!(s("''"), [""]);
        assert_eq!(s("   "), Vec::<String>::new());
        assert!(split_shell("echo 'oops").is_err());
        assert!(split_shell("echo \"oops").is_err());
    }

    #[test]
    fn short_ports() {
        let one = |text| {
            let ports = parse_port_short(text).expect("ok");
            assert_eq!(ports.len(), 1, "{text}");
            ports.into_iter().next().expect("one port")
        };
        let p = one("8080");
        assert_eq!((p.target, p.published, p.protocol), (8080, None, Protocol::Tcp));
        let p = one("8080:80/udp");
        assert_eq!((p.target, p.published, p.protocol), (80, Some(8080), Protocol::Udp));
        let p = one("127.0.0.1:8080:80");
        assert_eq!((p.target, p.published, p.host_ip.as_str()), (80, Some(8080), "127.0.0.1"));
        let p = one("127.0.0.1::80");
        assert_eq!((p.target, p.published), (80, None));
        let p = one("[::1]:53:53/sctp");
        assert_eq!((p.host_ip.as_str(), p.protocol), ("::1", Protocol::Sctp));
        assert_eq!(
            parse_port_short("80:http"),
            Err("invalid port \"80:http\": target port must be a number 1-65535, got \"http\"".into())
        );
        assert!(parse_port_short("70000").is_err());
        assert!(parse_port_short("0").is_err());
        assert!(parse_port_short("80/xyz").is_err());
        assert!(parse_port_short("1.2.3:80:80").is_err());
    }

    #[test]
    fn port_ranges() {
        let pairs = |text| -> Vec<(u16, Option<u16>)> {
            parse_port_short(text).expect("ok").iter().map(|p| (p.target, p.published)).collect()
        };
        assert_eq!(pairs("3000-3002"), [(3000, None), (3001, None), (3002, None)]);
        assert_eq!(pairs("8000-8001:80-81"), [(80, Some(8000)), (81, Some(8001))]);
        assert_eq!(pairs("127.0.0.1::53-54"), [(53, None), (54, None)]);
        let udp = parse_port_short("127.0.0.1:9000-9001:9000-9001/udp").expect("ok");
        assert!(udp.iter().all(|p| p.protocol == Protocol::Udp && p.host_ip == "127.0.0.1"));
        assert_eq!(
            parse_port_short("8000-8010:80"),
            Err("invalid port \"8000-8010:80\": a published range with one target port means a port picked at \
                 random on each node; give a target range of the same length (8000-8002:80-82) or one published port"
                .into())
        );
        assert_eq!(
            parse_port_short("8000-8001:80-82"),
            Err("invalid port \"8000-8001:80-82\": the published and target ranges must have the same length".into())
        );
        assert_eq!(
            parse_port_short("90-80"),
            Err("invalid port \"90-80\": target range \"90-80\" ends before it starts".into())
        );
        assert!(parse_port_short("1-2000").is_err());
        assert_eq!(
            parse_port_short("1-2-3"),
            Err("invalid port \"1-2-3\": target range \"1-2-3\" must be FIRST-LAST, like 8000-8002".into())
        );
        assert!(parse_port_short("8080:80-81").is_err());
    }

    #[test]
    fn short_volumes() {
        let v = parse_volume_short("data:/var/lib/data:ro,z").expect("ok");
        assert_eq!(v, ShortVolume { source: Some("data"), target: "/var/lib/data", options: vec!["ro", "z"] });
        let v = parse_volume_short("/tmp").expect("ok");
        assert_eq!((v.source, v.target), (None, "/tmp"));
        assert!(parse_volume_short("a:b:c:d").is_err());
        assert!(parse_volume_short(":/x").is_err());
    }

    #[test]
    fn uints() {
        assert_eq!(parse_uint("12"), Some(12));
        assert_eq!(parse_uint("+3"), Some(3));
        assert_eq!(parse_uint("-2"), None);
        assert_eq!(parse_uint("1.0"), None);
        assert_eq!(parse_uint("99999999999999999999999"), None);
    }
}
