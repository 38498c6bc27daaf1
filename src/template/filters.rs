//! The environment templates run in: the syntax, and the only filters and
//! tests there are, each paying for what it builds.

use super::*;

// === The environment: filters and tests ===

/// Jinja's delimiters; a template's last newline is kept (it is a file) and
/// the newline after a `{% … %}` tag is dropped, so loops and conditions on
/// lines of their own leave no empty lines.
pub(super) fn syntax() -> SyntaxConfig {
    SyntaxConfig::builder()
        .keep_trailing_newline(true)
        .trim_blocks(true)
        .build()
        .unwrap_or_default()
}

/// An environment with the syntax and behaviour of templates and nothing
/// else: no filters, tests or globals.
pub(super) fn bare_environment() -> Environment<'static> {
    let mut env = Environment::empty();
    env.set_syntax(syntax());
    env.set_undefined_behavior(UndefinedBehavior::Strict);
    env.set_recursion_limit(16);
    env
}

/// An environment with only the filters and tests of this module, strict
/// about undefined values, and no auto-escaping.
pub(super) fn environment(work: Arc<WorkCell>) -> Environment<'static> {
    let mut env = bare_environment();

    env.add_test("defined", |v: &Value| !v.is_undefined());
    env.add_test("undefined", |v: &Value| v.is_undefined());
    env.add_test("none", |v: &Value| v.is_none());
    env.add_test("string", |v: &Value| v.as_str().is_some());
    env.add_test("mapping", |v: &Value| {
        v.as_object().is_some_and(|o| o.repr() == ObjectRepr::Map)
    });

    env.add_filter("default", minijinja::filters::default);
    let w = work.clone();
    env.add_filter("length", move |v: &Value| -> Result<usize, Error> {
        // A string's length counts its characters.
        w.charge("length", v.as_bytes().map_or(0, <[u8]>::len) as u64)?;
        minijinja::filters::length(v)
    });
    let w = work.clone();
    env.add_filter("items", move |v: &Value| {
        let n = v.len().unwrap_or(0).max(1) as u64;
        w.charge("items", n.saturating_mul(64))?;
        minijinja::filters::items(v)
    });
    let w = work.clone();
    env.add_filter("trim", move |s: &str| -> Result<Value, Error> {
        w.charge("trim", s.len() as u64)?;
        let t = s.trim();
        Ok(Value::from(t))
    });
    let w = work.clone();
    env.add_filter("upper", move |s: &str| -> Result<Value, Error> {
        w.charge("upper", (s.len() as u64).saturating_mul(3))?;
        Ok(Value::from(s.to_uppercase()))
    });
    let w = work.clone();
    env.add_filter("lower", move |s: &str| -> Result<Value, Error> {
        w.charge("lower", (s.len() as u64).saturating_mul(3))?;
        Ok(Value::from(s.to_lowercase()))
    });
    let w = work.clone();
    env.add_filter(
        "replace",
        move |s: &str, from: &str, to: &str| -> Result<Value, Error> {
            if from.is_empty() {
                return Err(filter_error("replace", "the text to replace is empty"));
            }
            let n = s.matches(from).count() as u64;
            let size = (s.len() as u64)
                .saturating_sub(n.saturating_mul(from.len() as u64))
                .saturating_add(n.saturating_mul(to.len() as u64));
            w.charge("replace", size.max(s.len() as u64))?;
            Ok(Value::from(s.replace(from, to)))
        },
    );
    let w = work.clone();
    env.add_filter(
        "indent",
        move |s: &str, width: u32, first: Option<bool>, kwargs: Kwargs| -> Result<Value, Error> {
            let first = match first {
                Some(f) => Some(f),
                None => kwargs.get::<Option<bool>>("first")?,
            };
            kwargs.assert_all_used()?;
            if width > 64 {
                return Err(filter_error("indent", "the width is more than 64"));
            }
            let lines = s.lines().count() as u64;
            w.charge(
                "indent",
                (s.len() as u64).saturating_add(lines.saturating_mul(u64::from(width))),
            )?;
            let pad = " ".repeat(width as usize);
            let mut out = String::with_capacity(s.len() + lines as usize * pad.len());
            for (i, line) in s.split('\n').enumerate() {
                if i > 0 {
                    out.push('\n');
                }
                if !line.is_empty() && (i > 0 || first.unwrap_or(false)) {
                    out.push_str(&pad);
                }
                out.push_str(line);
            }
            Ok(Value::from(out))
        },
    );
    let w = work.clone();
    env.add_filter("join", move |v: &Value, sep: Option<&str>| -> Result<Value, Error> {
        let sep = sep.unwrap_or("");
        // Items are gathered before their sizes are known.
        let items = v.len().ok_or_else(|| filter_error("join", "joins a list of strings"))?;
        w.charge("join", (items as u64).saturating_mul(32))?;
        let mut parts: Vec<Value> = Vec::with_capacity(items);
        let mut size = 0u64;
        for item in v.try_iter()? {
            let len = item
                .as_str()
                .map(str::len)
                .ok_or_else(|| filter_error("join", &format!("joins strings only, found {}", item.kind())))?;
            size = size.saturating_add(len as u64).saturating_add(sep.len() as u64);
            parts.push(item);
        }
        w.charge("join", size)?;
        let mut out = String::with_capacity(size as usize);
        for (i, p) in parts.iter().enumerate() {
            if i > 0 {
                out.push_str(sep);
            }
            out.push_str(p.as_str().unwrap_or_default());
        }
        Ok(Value::from(out))
    });
    let w = work.clone();
    env.add_filter("fromjson", move |s: &str| -> Result<Value, Error> {
        // A parsed value takes up to ~30 times its text in memory (`[[],…]`).
        w.charge("fromjson", (s.len() as u64).saturating_mul(32))?;
        // Where the text stops being JSON says something about the value.
        serde_json::from_str::<Value>(s).map_err(|_| filter_error("fromjson", "the value is not JSON"))
    });
    let w = work.clone();
    env.add_filter("tojson", move |v: &Value| -> Result<Value, Error> {
        let remaining = w.remaining();
        let mut out = Capped::new(remaining, w.current()?);
        if serde_json::to_writer(&mut out, v).is_err() {
            if out.exceeded {
                w.charge("tojson", remaining.saturating_add(1))?;
            }
            return Err(filter_error("tojson", "the value cannot be written as JSON"));
        }
        w.charge("tojson", out.buf.len() as u64)?;
        let text = String::from_utf8(std::mem::take(&mut out.buf))
            .map_err(|_| filter_error("tojson", "the value cannot be written as JSON"))?;
        Ok(Value::from(text))
    });
    let w = work.clone();
    env.add_filter("b64encode", move |v: &Value| -> Result<Value, Error> {
        use base64::Engine;
        let bytes = bytes_of(v, "b64encode")?;
        w.charge("b64encode", (bytes.len() as u64).div_ceil(3).saturating_mul(4))?;
        Ok(Value::from(base64::engine::general_purpose::STANDARD.encode(bytes)))
    });
    let w = work.clone();
    env.add_filter("b64decode", move |s: &str| -> Result<Value, Error> {
        w.charge("b64decode", s.len() as u64)?;
        let decoded = crate::encoding::decode(crate::encoding::Encoding::Base64, SecretBytes::from(s.to_string()))
            .map_err(|_| filter_error("b64decode", "the value is not base64"))?;
        Ok(match std::str::from_utf8(decoded.expose()) {
            Ok(text) => Value::from(text),
            Err(_) => Value::from_bytes(decoded.expose().to_vec()),
        })
    });
    let w = work.clone();
    env.add_filter("urlencode", move |s: &str| -> Result<Value, Error> {
        w.charge("urlencode", (s.len() as u64).saturating_mul(3))?;
        let mut out = String::with_capacity(s.len());
        for b in s.bytes() {
            if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b'~') {
                out.push(b as char);
            } else {
                out.push_str(&format!("%{b:02X}"));
            }
        }
        Ok(Value::from(out))
    });
    let w = work;
    env.add_filter("shellquote", move |s: &str| -> Result<Value, Error> {
        let quotes = s.matches('\'').count() as u64;
        w.charge(
            "shellquote",
            (s.len() as u64)
                .saturating_add(quotes.saturating_mul(3))
                .saturating_add(2),
        )?;
        Ok(Value::from(format!("'{}'", s.replace('\'', r"'\''"))))
    });
    env
}

/// The bytes of a string or bytes value.
pub(super) fn bytes_of<'a>(v: &'a Value, filter: &'static str) -> Result<&'a [u8], Error> {
    v.as_bytes()
        .ok_or_else(|| filter_error(filter, &format!("takes a string or bytes, found {}", v.kind())))
}

pub(super) fn filter_error(filter: &'static str, reason: &str) -> Error {
    Error::new(ErrorKind::InvalidOperation, format!("{filter}: {reason}"))
}
