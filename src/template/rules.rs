//! The rules of the template language, checked on a template's tokens
//! before it is compiled.

use super::*;

// === The rules, checked on the template's tokens ===

/// Checks the template's tokens against the rules of this module and returns
/// the files it names literally.
///
/// Besides the operators, statements and calls refused outright, the rules
/// keep every operation whose cost grows with a value charged or bounded by
/// a constant of the template:
/// - a list or mapping literal holds constants only (names in literals would
///   build structures that share their parts, whose size doubles per
///   statement but whose fuel does not), and there are no tuples;
/// - a subscript is a constant (`x["key"]`, `x[3]` up to [`MAX_INDEX`]): a
///   computed index on a string walks it;
/// - a comparison has a constant on one side, and `in` tests membership in a
///   literal list, so neither walks two computed values;
/// - an `if` has at most [`MAX_ELIF`] `elif`s (the parser recurses once per
///   `elif`, without its depth guard);
/// - `files` is not assigned (so references stay checkable).
pub(super) fn scan(file: &str, source: &str) -> Result<Vec<(String, u32)>, TemplateError> {
    let mut tokens: Vec<(Token<'_>, u32)> = Vec::new();
    for t in tokenize(source, false, syntax()) {
        match t {
            Ok((token, span)) => tokens.push((token, u32::from(span.start_line))),
            Err(e) => return Err(language_error(file, &e)),
        }
    }
    let refuse = |line: u32, what: &str, hint: &'static str| {
        Err(TemplateError::new(
            file,
            Some(line),
            Problem::NotAllowed {
                what: what.to_string(),
                hint,
            },
        ))
    };
    let mut references: Vec<(String, u32)> = Vec::new();
    // Open brackets, innermost last.
    let mut open: Vec<Open> = Vec::new();
    let mut tag = Tag::Print;
    let mut statement_start = false;
    // The `elif`s of each open `if`.
    let mut ifs: Vec<usize> = Vec::new();
    let mut in_tag = 0usize;
    for (i, (token, line)) in tokens.iter().enumerate() {
        let line = *line;
        match token {
            Token::BlockStart | Token::VariableStart => in_tag = 1,
            Token::BlockEnd | Token::VariableEnd => in_tag = 0,
            _ if in_tag > 0 => in_tag += 1,
            _ => {}
        }
        if in_tag > MAX_TAG_TOKENS {
            return refuse(
                line,
                &format!("a tag of more than {MAX_TAG_TOKENS} tokens"),
                ": split it, or use a set statement for a part of it",
            );
        }
        let at = |k: usize| tokens.get(k).map(|t| &t.0);
        let prev = i.checked_sub(1).and_then(at);
        let next = at(i + 1);
        let in_literal = open.iter().any(|o| matches!(o, Open::List | Open::Dict));
        if in_literal
            && !(is_constant(token)
                || matches!(
                    token,
                    Token::Comma | Token::BracketOpen | Token::BracketClose | Token::BraceOpen | Token::BraceClose
                )
                || (matches!(token, Token::Colon) && open.last() == Some(&Open::Dict)))
        {
            return refuse(
                line,
                "a list or mapping literal holding a name or an expression",
                ": literals hold constants only",
            );
        }
        match token {
            Token::Plus
            | Token::Minus
            | Token::Mul
            | Token::Div
            | Token::FloorDiv
            | Token::Pow
            | Token::Mod
            | Token::Tilde => {
                return refuse(
                    line,
                    &format!("the operator {token}"),
                    ": write the parts one after the other ({{ a }}{{ b }}) instead of joining them",
                );
            }
            Token::BlockStart => {
                statement_start = true;
                tag = Tag::Other;
                continue;
            }
            Token::VariableStart => tag = Tag::Print,
            Token::BlockEnd => {
                if tag == (Tag::Set { assigned: false }) {
                    return refuse(line, "{% set %} capturing a block", ": assign a value instead");
                }
                open.clear();
            }
            Token::VariableEnd => open.clear(),
            Token::BracketOpen if !in_literal && ends_value(prev) => {
                let constant = match next {
                    Some(Token::Str(_) | Token::String(_)) => true,
                    Some(Token::Int(n)) => *n <= MAX_INDEX,
                    _ => false,
                };
                if matches!(next, Some(Token::Colon)) || matches!(at(i + 2), Some(Token::Colon)) {
                    return refuse(line, "a slice", "");
                }
                if !constant || !matches!(at(i + 2), Some(Token::BracketClose)) {
                    return refuse(
                        line,
                        "a computed index",
                        ": index with a constant (x[\"key\"], x[0] up to x[1024]), or iterate with items",
                    );
                }
                open.push(Open::Subscript);
            }
            Token::BracketOpen => {
                if in_literal
                    && !matches!(
                        prev,
                        Some(Token::BracketOpen | Token::BraceOpen | Token::Comma | Token::Colon)
                    )
                {
                    return refuse(line, "a computed index", "");
                }
                open.push(Open::List);
            }
            Token::ParenOpen => {
                let call = match prev {
                    Some(Token::Ident(name)) => !KEYWORDS.contains(name) && !is_filter_or_test(&tokens, i - 1),
                    Some(
                        Token::BracketClose | Token::ParenClose | Token::BraceClose | Token::Str(_) | Token::String(_),
                    ) => true,
                    _ => false,
                };
                if call {
                    return refuse(line, "calling a function", ": use a filter (value | filter)");
                }
                open.push(if matches!(prev, Some(Token::Ident(_))) {
                    Open::Args
                } else {
                    Open::Group
                });
            }
            Token::BraceOpen => open.push(Open::Dict),
            Token::BracketClose | Token::ParenClose | Token::BraceClose => {
                open.pop();
            }
            Token::Colon => match open.last() {
                Some(Open::Dict) => {}
                Some(Open::Subscript) => return refuse(line, "a slice", ""),
                _ => return refuse(line, "`:` outside a mapping literal", ""),
            },
            Token::Comma => {
                let allowed = match open.last() {
                    Some(Open::Args | Open::List | Open::Dict) => true,
                    Some(Open::Group | Open::Subscript) => false,
                    // Several targets (`for k, v in`, `set a, b =`) or
                    // several assignments (`with a = x, b = y`).
                    None => matches!(
                        tag,
                        Tag::For { looped: false } | Tag::With | Tag::Set { assigned: false }
                    ),
                };
                if !allowed {
                    return refuse(line, "a tuple", ": write the values one by one");
                }
            }
            Token::Assign => {
                if let Tag::Set { assigned } = &mut tag {
                    *assigned = true;
                }
            }
            Token::Eq | Token::Ne | Token::Lt | Token::Gt | Token::Lte | Token::Gte => {
                let before = prev.is_some_and(is_constant);
                let after = next.is_some_and(is_constant)
                    && !matches!(at(i + 2), Some(Token::Pipe | Token::Dot | Token::BracketOpen));
                if !before && !after {
                    return refuse(
                        line,
                        "comparing two computed values",
                        ": compare with a constant (x == \"on\", n > 3)",
                    );
                }
            }
            Token::Ident(name) => {
                let attribute = matches!(prev, Some(Token::Dot));
                if statement_start {
                    if !STATEMENTS.contains(name) {
                        return refuse(
                            line,
                            &format!("{{% {} %}}", echo(name)),
                            ": the statements are if, for, set and with",
                        );
                    }
                    tag = match *name {
                        "set" => Tag::Set { assigned: false },
                        "with" => Tag::With,
                        "for" => Tag::For { looped: false },
                        _ => Tag::Other,
                    };
                    match *name {
                        "if" => ifs.push(0),
                        "endif" => {
                            ifs.pop();
                        }
                        "elif" => {
                            if let Some(n) = ifs.last_mut() {
                                *n += 1;
                                if *n > MAX_ELIF {
                                    return refuse(
                                        line,
                                        &format!("an if with more than {MAX_ELIF} elifs"),
                                        ": split it, or map the cases with a literal mapping",
                                    );
                                }
                            }
                        }
                        _ => {}
                    }
                } else if attribute {
                    // An attribute name, not a keyword, filter or variable.
                } else if *name == "recursive" {
                    return refuse(line, "a recursive loop", "");
                } else if *name == "in" && tag == (Tag::For { looped: false }) && open.is_empty() {
                    tag = Tag::For { looped: true };
                } else if *name == "in" {
                    if !matches!(next, Some(Token::BracketOpen)) {
                        return refuse(
                            line,
                            "`in` on a computed value",
                            ": test membership in a literal list (x in [\"a\", \"b\"]), or a key with `is defined`",
                        );
                    }
                } else if matches!(prev, Some(Token::Pipe)) {
                    if !FILTERS.contains(name) {
                        return Err(TemplateError::new(
                            file,
                            Some(line),
                            Problem::UnknownFilter(name.to_string()),
                        ));
                    }
                } else if test_position(&tokens, i) {
                    if !TESTS.contains(name) {
                        return Err(TemplateError::new(
                            file,
                            Some(line),
                            Problem::UnknownTest(name.to_string()),
                        ));
                    }
                } else if *name == FILES {
                    let assigned = matches!(next, Some(Token::Assign))
                        || matches!(tag, Tag::Set { assigned: false } | Tag::For { looped: false });
                    if assigned {
                        return refuse(line, "assigning `files`", ": choose another name");
                    }
                    let named = match (next, at(i + 2), at(i + 3)) {
                        (Some(Token::Dot), Some(Token::Ident(n)), _) => Some(n.to_string()),
                        (Some(Token::BracketOpen), Some(Token::Str(n)), Some(Token::BracketClose)) => {
                            Some(n.to_string())
                        }
                        (Some(Token::BracketOpen), Some(Token::String(n)), Some(Token::BracketClose)) => {
                            Some(n.to_string())
                        }
                        _ => None,
                    };
                    if let Some(n) = named
                        && !references.iter().any(|(r, _)| *r == n)
                    {
                        references.push((n, line));
                    }
                }
            }
            _ => {}
        }
        statement_start = false;
    }
    Ok(references)
}

/// What an open bracket of an expression is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Open {
    /// `x[…]`
    Subscript,
    /// `[…]`
    List,
    /// `{…}`
    Dict,
    /// `(…)` around an expression.
    Group,
    /// `(…)` after a filter or test: its arguments.
    Args,
}

/// The tag being scanned, as far as the rules care.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Tag {
    /// `{{ … }}`
    Print,
    /// `{% set … %}`, before or after its `=`.
    Set {
        assigned: bool,
    },
    /// `{% with … %}`
    With,
    /// `{% for … %}`, before or after the loop's `in`.
    For {
        looped: bool,
    },
    Other,
}

/// Greatest constant index of a subscript.
pub const MAX_INDEX: u64 = 1024;
/// Most `elif`s of one `if`.
pub const MAX_ELIF: usize = 64;

/// Words that are constants.
pub(super) const CONSTANTS: &[&str] = &["true", "false", "none", "True", "False", "None"];

/// Whether a token is a constant of the template.
pub(super) fn is_constant(t: &Token<'_>) -> bool {
    match t {
        Token::Str(_) | Token::String(_) | Token::Int(_) | Token::Int128(_) | Token::Float(_) => true,
        Token::Ident(n) => CONSTANTS.contains(n),
        _ => false,
    }
}

/// Whether a token ends a value, so that `[` after it is a subscript.
pub(super) fn ends_value(t: Option<&Token<'_>>) -> bool {
    match t {
        Some(Token::Ident(n)) => !KEYWORDS.contains(n) || CONSTANTS.contains(n),
        Some(Token::Str(_) | Token::String(_) | Token::BracketClose | Token::ParenClose | Token::BraceClose) => true,
        _ => false,
    }
}

/// Whether the identifier at `i` names a filter or a test (so a `(` after it
/// passes arguments, not calls a function).
pub(super) fn is_filter_or_test(tokens: &[(Token<'_>, u32)], i: usize) -> bool {
    matches!(i.checked_sub(1).map(|p| &tokens[p].0), Some(Token::Pipe)) || test_position(tokens, i)
}

/// Whether the identifier at `i` follows `is` or `is not`.
pub(super) fn test_position(tokens: &[(Token<'_>, u32)], i: usize) -> bool {
    let at = |k: usize| i.checked_sub(k).map(|p| &tokens[p].0);
    matches!(at(1), Some(Token::Ident("is")))
        || (matches!(at(1), Some(Token::Ident("not"))) && matches!(at(2), Some(Token::Ident("is"))))
}
