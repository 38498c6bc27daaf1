//! JMESPath, bounded. Expressions come from any tenant, so before one is
//! parsed its length and nesting are checked (the parser and the evaluator
//! recurse once per level); once parsed, it is compiled once and reused; and
//! before it is evaluated against a value, an upper bound of the work the
//! evaluation can do (every value it can produce, weighted by what it
//! occupies in memory) is computed from the expression and the value's size.
//! Expressions whose output can double at each step are refused before they
//! run, not stopped while they run. The parsed JSON is zeroized when the
//! evaluation is done.

use std::collections::{BTreeMap, HashMap};
use std::fmt;
use std::sync::Arc;

use jmespath::Variable;
use jmespath::ast::Ast;

use crate::limits::Limits;
use crate::secret::SecretBytes;

/// A compiled, validated expression. Equality and `Debug` use its text.
#[derive(Clone)]
pub struct JmesPath {
    text: String,
    expr: Arc<jmespath::Expression<'static>>,
}

impl fmt::Debug for JmesPath {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "JmesPath({:?})", self.text)
    }
}

impl PartialEq for JmesPath {
    fn eq(&self, other: &Self) -> bool {
        self.text == other.text
    }
}

impl Eq for JmesPath {}

/// Deepest syntax tree accepted (levels from the root to a leaf). The
/// evaluator recurses once per level, and operator chains (`a.b.c…`,
/// `a | b | …`, `a || b || …`) deepen the tree without nesting anything
/// ([`nesting`] does not count them). 140 levels fit a 2 MiB stack even in
/// a debug build (about 200 do); the deepest nesting accepted
/// ([`JMESPATH_DEPTH_CAP`](crate::limits::JMESPATH_DEPTH_CAP)) needs 129.
pub const MAX_TREE_DEPTH: usize = 140;

/// Largest slice step accepted: jmespath 0.5 steps through a slice with
/// `i += step` in an `i32`, which overflows (then indexes out of bounds)
/// for steps near `i32::MAX`. A larger step selects the same elements of
/// any array a value can hold (fewer than 2^30).
const MAX_SLICE_STEP: i32 = i32::MAX / 2;

/// Why an expression was not compiled.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CompileError {
    /// Longer than `--max-jmespath-length` (bytes).
    Length(usize),
    /// Nested deeper than `--max-jmespath-depth`.
    Depth(usize),
    /// A syntax tree deeper than [`MAX_TREE_DEPTH`] (long operator chains).
    TreeDepth(usize),
    /// Not a JMESPath expression.
    Syntax,
    /// Can exceed `--max-jmespath-work` whatever the value (estimated bytes).
    Work(u64),
}

/// Why an evaluation produced no file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum EvalError {
    /// The value is not JSON.
    NotJson,
    /// The evaluation may do more work than `--max-jmespath-work` for a
    /// value of this size (estimated bytes).
    Work(u64),
    /// A runtime error (unknown function, wrong argument type).
    Runtime,
    /// The result is null.
    Null,
    /// The result is not a string.
    NotString,
}

/// Compiles `text` under `limits`: length, then nesting, then syntax (and
/// the syntax tree's depth and slice steps), then the work an evaluation
/// can do even on the smallest value.
pub fn compile(text: &str, limits: &Limits) -> Result<JmesPath, CompileError> {
    if text.len() > limits.max_jmespath_length {
        return Err(CompileError::Length(text.len()));
    }
    let depth = nesting(text);
    if depth > limits.max_jmespath_depth.min(crate::limits::JMESPATH_DEPTH_CAP) {
        return Err(CompileError::Depth(depth));
    }
    let expr = jmespath::compile(text).map_err(|_| CompileError::Syntax)?;
    check_tree(expr.as_ast())?;
    let path = JmesPath {
        text: text.to_string(),
        expr: Arc::new(expr),
    };
    let least = path.work_bound(0);
    if least > limits.max_jmespath_work {
        return Err(CompileError::Work(least));
    }
    Ok(path)
}

impl JmesPath {
    pub fn as_str(&self) -> &str {
        &self.text
    }

    /// Evaluates against `value` (JSON text). The result must be a string;
    /// it is returned as the file's contents.
    pub fn evaluate(&self, value: &[u8], limits: &Limits) -> Result<SecretBytes, EvalError> {
        self.evaluate_with(value, limits, false)
    }

    /// [`Self::evaluate`], writing a non-string, non-null result as compact
    /// JSON when `non_string_json` (a `jmesPath` entry's `nonStringAsJson`).
    pub fn evaluate_with(
        &self,
        value: &[u8],
        limits: &Limits,
        non_string_json: bool,
    ) -> Result<SecretBytes, EvalError> {
        let bound = self.work_bound(value.len());
        if bound > limits.max_jmespath_work {
            return Err(EvalError::Work(bound));
        }
        let text = std::str::from_utf8(value).map_err(|_| EvalError::NotJson)?;
        let data = Arc::new(Variable::from_json(text).map_err(|_| EvalError::NotJson)?);
        let result = self.expr.search(data.clone());
        let out = match &result {
            Err(_) => Err(EvalError::Runtime),
            Ok(v) if v.is_null() => Err(EvalError::Null),
            Ok(v) => match v.as_string() {
                Some(s) => Ok(SecretBytes::from(s.as_bytes().to_vec())),
                None if non_string_json => serde_json::to_vec(&**v)
                    .map(SecretBytes::new)
                    .map_err(|_| EvalError::Runtime),
                None => Err(EvalError::NotString),
            },
        };
        drop(result);
        wipe(data);
        out
    }

    /// What an evaluation against a value of `value_len` bytes holds at
    /// most: the value parsed ([`PARSE_FACTOR`] per byte) and the bound of
    /// [`Self::work_bound`].
    pub fn memory_bound(&self, value_len: usize) -> u64 {
        (value_len as u64)
            .saturating_mul(PARSE_FACTOR)
            .saturating_add(self.work_bound(value_len))
    }

    /// An upper bound, in bytes, of the values an evaluation against a value
    /// of `value_len` bytes produces, intermediate values included. Parsing
    /// the value and copying the resulting string come on top; both are
    /// linear in the value's size (which `--max-file-bytes` bounds).
    pub fn work_bound(&self, value_len: usize) -> u64 {
        let mut b = Bounds::default();
        let input = input_units(value_len);
        let cost = b.cost(self.expr.as_ast(), input);
        if cost.work.is_finite() && cost.work < u64::MAX as f64 {
            cost.work.ceil() as u64
        } else {
            u64::MAX
        }
    }
}

/// Refuses a syntax tree deeper than [`MAX_TREE_DEPTH`] (without
/// recursing) or with a slice step above [`MAX_SLICE_STEP`].
fn check_tree(root: &Ast) -> Result<(), CompileError> {
    let mut deepest = 0;
    let mut stack = vec![(root, 1usize)];
    while let Some((node, depth)) = stack.pop() {
        deepest = deepest.max(depth);
        let children: Vec<&Ast> = match node {
            Ast::Slice { step, .. } if *step > MAX_SLICE_STEP => return Err(CompileError::Syntax),
            Ast::Subexpr { lhs, rhs, .. }
            | Ast::Or { lhs, rhs, .. }
            | Ast::And { lhs, rhs, .. }
            | Ast::Comparison { lhs, rhs, .. }
            | Ast::Projection { lhs, rhs, .. } => vec![lhs, rhs],
            Ast::Condition { predicate, then, .. } => vec![predicate, then],
            Ast::Not { node, .. } | Ast::Flatten { node, .. } | Ast::ObjectValues { node, .. } => vec![node],
            Ast::Expref { ast, .. } => vec![ast],
            Ast::Function { args, .. } | Ast::MultiList { elements: args, .. } => args.iter().collect(),
            Ast::MultiHash { elements, .. } => elements.iter().map(|kv| &kv.value).collect(),
            Ast::Identity { .. } | Ast::Field { .. } | Ast::Index { .. } | Ast::Literal { .. } | Ast::Slice { .. } => {
                vec![]
            }
        };
        stack.extend(children.into_iter().map(|c| (c, depth + 1)));
    }
    if deepest > MAX_TREE_DEPTH {
        return Err(CompileError::TreeDepth(deepest));
    }
    Ok(())
}

// === nesting ===

/// An upper bound of how deeply the JMESPath parser recurses on `expr`.
/// (Operator chains deepen the syntax tree, which the evaluator follows,
/// without making the parser recurse: the tree's depth is checked once
/// parsed, against [`MAX_TREE_DEPTH`].)
///
/// The parser recurses into every bracket, into each unary operator (`!`,
/// `&`), and into each projection (`[*]`, `.*`, `[]`, `[?...]`) until the
/// projection ends (at `|`, `||`, `&&`, a comparison, `,` or `:`, unless an
/// `&` is open: an expression reference takes everything to the end of its
/// group). Binary operators of increasing precedence add at most a fixed few
/// frames per group. Quoted identifiers and literals do not nest.
pub fn nesting(expr: &str) -> usize {
    #[derive(Default)]
    struct Group {
        /// A `[?...]` filter: a projection once closed.
        filter: bool,
        unary: usize,
        projections: usize,
        expref: bool,
    }
    fn depth(groups: &[Group]) -> usize {
        groups.iter().map(|g| 1 + g.unary + g.projections).sum::<usize>() - 1
    }
    let mut groups = vec![Group::default()];
    let bytes = expr.as_bytes();
    let mut max = 0;
    let mut i = 0;
    while i < bytes.len() {
        let c = bytes[i];
        let next = bytes.get(i + 1).copied();
        let mut binary = false;
        let mut projection = false;
        match c {
            b'\'' | b'"' | b'`' => {
                i += 1;
                while i < bytes.len() && bytes[i] != c {
                    i += if bytes[i] == b'\\' { 2 } else { 1 };
                }
            }
            // `[*]` and `[]` project what precedes them.
            b'[' if next == Some(b'*') && bytes.get(i + 2) == Some(&b']') => {
                projection = true;
                i += 2;
            }
            b'[' if next == Some(b']') => {
                projection = true;
                i += 1;
            }
            b'(' | b'[' | b'{' => groups.push(Group {
                filter: c == b'[' && next == Some(b'?'),
                ..Group::default()
            }),
            b')' | b']' | b'}' => {
                if groups.len() > 1
                    && let Some(g) = groups.pop()
                {
                    projection = g.filter;
                }
            }
            b'*' => projection = true,
            b'!' if next != Some(b'=') => {
                if let Some(g) = groups.last_mut() {
                    g.unary += 1;
                }
            }
            b'&' if next != Some(b'&') => {
                if let Some(g) = groups.last_mut() {
                    g.unary += 1;
                    g.expref = true;
                }
            }
            b'&' | b'|' | b'!' | b'=' | b'<' | b'>' => {
                if matches!(next, Some(b'&' | b'|' | b'=')) {
                    i += 1;
                }
                binary = true;
            }
            b',' | b':' => {
                if let Some(g) = groups.last_mut() {
                    *g = Group {
                        filter: g.filter,
                        ..Group::default()
                    };
                }
            }
            _ => {}
        }
        if let Some(g) = groups.last_mut() {
            if projection {
                g.projections += 1;
            }
            if binary {
                if g.expref {
                    g.unary += 1;
                } else {
                    g.projections = 0;
                }
            }
        }
        max = max.max(depth(&groups));
        i += 1;
    }
    max
}

// === work bound ===

/// What one value costs at least in memory besides its text: an
/// `Arc<Variable>` and its share of a container.
const NODE: f64 = 64.0;

/// The units of a parsed JSON value of `len` bytes: every node at least
/// [`NODE`], at most one node per two bytes (`1,`), plus the text itself.
fn input_units(len: usize) -> f64 {
    let len = len as f64;
    NODE * (len / 2.0 + 1.0) + len
}

/// An upper bound of a node's output and of all the work (values produced,
/// the output included) of evaluating it.
#[derive(Debug, Clone, Copy)]
struct Cost {
    out: f64,
    work: f64,
}

/// Bounds are convex and non-decreasing in the input size (they are built
/// from sums, products, maxima and compositions of such functions), so for
/// elements whose sizes add up to `L`, `Σ f(xᵢ) ≤ f(L) + n·f(0)`: the cost
/// at zero is kept per node.
#[derive(Default)]
struct Bounds {
    at_zero: HashMap<*const Ast, Cost>,
}

impl Bounds {
    fn zero(&mut self, node: &Ast) -> Cost {
        let key = node as *const Ast;
        if let Some(c) = self.at_zero.get(&key) {
            return *c;
        }
        let c = self.cost(node, 0.0);
        self.at_zero.insert(key, c);
        c
    }

    /// The cost of applying `node` to `n` elements whose sizes add up to
    /// `total`.
    fn each(&mut self, node: &Ast, total: f64) -> Cost {
        let n = total / NODE;
        let all = self.cost(node, total);
        let zero = self.zero(node);
        Cost {
            out: all.out + n * zero.out,
            work: all.work + n * zero.work,
        }
    }

    fn cost(&mut self, node: &Ast, x: f64) -> Cost {
        let produce = |out: f64, work: f64| Cost { out, work: work + out };
        match node {
            Ast::Identity { .. } | Ast::Field { .. } | Ast::Index { .. } => Cost { out: x, work: NODE },
            Ast::Slice { .. } => produce(x + NODE, 0.0),
            Ast::Literal { value, .. } => {
                let text = serde_json::to_string(&**value).map(|s| s.len()).unwrap_or(0);
                produce(input_units(text), 0.0)
            }
            Ast::Expref { .. } => produce(NODE, 0.0),
            Ast::Subexpr { lhs, rhs, .. } => {
                let l = self.cost(lhs, x);
                let r = self.cost(rhs, l.out);
                Cost {
                    out: r.out,
                    work: l.work + r.work,
                }
            }
            Ast::Or { lhs, rhs, .. } | Ast::And { lhs, rhs, .. } => {
                let l = self.cost(lhs, x);
                let r = self.cost(rhs, x);
                Cost {
                    out: l.out.max(r.out),
                    work: l.work + r.work,
                }
            }
            Ast::Not { node, .. } => {
                let n = self.cost(node, x);
                produce(NODE, n.work)
            }
            Ast::Condition { predicate, then, .. } => {
                let p = self.cost(predicate, x);
                let t = self.cost(then, x);
                Cost {
                    out: t.out,
                    work: p.work + t.work,
                }
            }
            Ast::Comparison { lhs, rhs, .. } => {
                let l = self.cost(lhs, x);
                let r = self.cost(rhs, x);
                produce(NODE, l.work + r.work + l.out + r.out)
            }
            Ast::ObjectValues { node, .. } | Ast::Flatten { node, .. } => {
                let n = self.cost(node, x);
                produce(n.out + NODE, n.work)
            }
            Ast::MultiList { elements, .. } => {
                let mut out = NODE;
                let mut work = 0.0;
                for e in elements {
                    let c = self.cost(e, x);
                    out += c.out;
                    work += c.work;
                }
                produce(out, work)
            }
            Ast::MultiHash { elements, .. } => {
                let mut out = NODE;
                let mut work = 0.0;
                for kv in elements {
                    let c = self.cost(&kv.value, x);
                    out += c.out + kv.key.len() as f64 + NODE;
                    work += c.work;
                }
                produce(out, work)
            }
            Ast::Projection { lhs, rhs, .. } => {
                let l = self.cost(lhs, x);
                let r = self.each(rhs, l.out);
                produce(r.out + NODE, l.work + r.work)
            }
            Ast::Function { name, args, .. } => self.function(name, args, x),
        }
    }

    fn function(&mut self, name: &str, args: &[Ast], x: f64) -> Cost {
        let costs: Vec<Cost> = args.iter().map(|a| self.cost(a, x)).collect();
        let out_of = |i: usize| costs.get(i).map_or(0.0, |c| c.out);
        let args_out: f64 = costs.iter().map(|c| c.out).sum();
        let args_work: f64 = costs.iter().map(|c| c.work).sum();
        let expref = |i: usize| match args.get(i) {
            Some(Ast::Expref { ast, .. }) => Some(&**ast),
            _ => None,
        };
        let produce = |out: f64, work: f64| Cost {
            out,
            work: args_work + work + out,
        };
        match name {
            // The expression is evaluated once per element.
            "sort_by" | "max_by" | "min_by" => {
                let array = out_of(0);
                let per = expref(1).map(|e| self.each(e, array));
                let (keys_out, keys_work) = per.map_or((0.0, 0.0), |c| (c.out, c.work));
                // Comparisons read the keys; n·log n of them read no more
                // than a few passes over the keys for any n a value holds.
                produce(array + NODE, keys_work + 2.0 * keys_out)
            }
            "map" => {
                let array = out_of(1);
                let per = expref(0).map(|e| self.each(e, array));
                let (out, work) = per.map_or((0.0, 0.0), |c| (c.out, c.work));
                produce(out + NODE, work)
            }
            // The separator goes between every two elements.
            "join" => {
                let array = out_of(1);
                produce(array + (array / NODE) * out_of(0) + NODE, 0.0)
            }
            // Serialization escapes a byte into at most six.
            "to_string" => produce(6.0 * out_of(0) + NODE, 0.0),
            "sort" => produce(out_of(0) + NODE, 2.0 * out_of(0)),
            "keys" | "values" | "to_array" | "reverse" => produce(out_of(0) + NODE, 0.0),
            "max" | "min" => produce(out_of(0), out_of(0)),
            "not_null" => produce(costs.iter().map(|c| c.out).fold(0.0, f64::max), 0.0),
            "merge" => produce(args_out + NODE, 0.0),
            // Numbers, booleans, type names; comparisons read the arguments.
            _ => produce(NODE, args_out),
        }
    }
}

// === zeroizing the parsed value ===

/// Zeroizes the strings (values and keys) of a parsed value the evaluation
/// no longer shares, then drops it. Nodes still shared elsewhere (only the
/// expression's own literals can be) are left alone.
fn wipe(root: Arc<Variable>) {
    use zeroize::Zeroize;
    let mut stack = vec![root];
    while let Some(mut node) = stack.pop() {
        let Some(v) = Arc::get_mut(&mut node) else { continue };
        match v {
            Variable::String(s) => s.zeroize(),
            Variable::Array(items) => stack.append(items),
            Variable::Object(map) => {
                for (mut key, value) in std::mem::take::<BTreeMap<String, Arc<Variable>>>(map) {
                    key.zeroize();
                    stack.push(value);
                }
            }
            _ => {}
        }
    }
}

/// Bytes a value parsed for evaluation holds per byte of its JSON at most
/// (a list of one-digit numbers: a shared node and a slot per two bytes,
/// about 85 bytes per byte), measured with a counting allocator
/// (`jmes::tests`).
pub const PARSE_FACTOR: u64 = 96;

#[cfg(test)]
mod tests {
    use super::*;

    fn limits() -> Limits {
        Limits::default()
    }

    #[test]
    fn what_an_evaluation_holds_is_bounded_beforehand() {
        let shapes = [
            format!("[{}1]", "1,".repeat(20_000)),
            format!("[{}[]]", "[],".repeat(20_000)),
            format!("[{}{{}}]", "{},".repeat(20_000)),
            format!(
                "{{{}\"z\":1}}",
                (0..8_000).map(|i| format!("\"{i}\":1,")).collect::<String>()
            ),
            format!("[{}\"\"]", "\"\",".repeat(20_000)),
            format!("{{\"password\": \"{}\"}}", "x".repeat(60_000)),
        ];
        let limits = Limits {
            max_jmespath_work: u64::MAX,
            ..limits()
        };
        for expr in ["password", "[*] | length(@)", "to_string(@)", "@"] {
            let p = compile(expr, &limits).unwrap();
            for value in &shapes {
                let info = allocation_counter::measure(|| {
                    let _ = p.evaluate_with(value.as_bytes(), &limits, true);
                });
                assert!(
                    info.bytes_max <= p.memory_bound(value.len()),
                    "{expr} on {}: {} > {}",
                    &value[..12],
                    info.bytes_max,
                    p.memory_bound(value.len())
                );
            }
        }
    }

    /// Compiles `expr` under `limits` and evaluates it against `value` on a
    /// thread with a 2 MiB stack (the smallest the provider runs them on);
    /// a stack overflow aborts the test.
    fn on_a_small_stack(expr: String, limits: Limits, value: &'static [u8]) -> Result<(), String> {
        std::thread::Builder::new()
            .stack_size(2 << 20)
            .spawn(move || {
                let p = compile(&expr, &limits).map_err(|e| format!("{e:?}"))?;
                let _ = p.evaluate(value, &limits);
                Ok(())
            })
            .unwrap()
            .join()
            .unwrap()
    }

    fn eval(path: &str, value: &str) -> Result<String, EvalError> {
        let p = compile(path, &limits()).unwrap();
        p.evaluate(value.as_bytes(), &limits())
            .map(|b| String::from_utf8(b.expose().to_vec()).unwrap())
    }

    #[test]
    fn non_string_results_are_compact_json_only_when_asked() {
        let v = r#"{"port":5432,"tls":{"on":true,"ca":"pem"},"hosts":["a","b"],"none":null,"user":"u"}"#;
        let json = |path: &str| {
            compile(path, &limits())
                .unwrap()
                .evaluate_with(v.as_bytes(), &limits(), true)
                .map(|b| String::from_utf8(b.expose().to_vec()).unwrap())
        };
        assert_eq!(json("port").unwrap(), "5432");
        assert_eq!(json("tls").unwrap(), r#"{"ca":"pem","on":true}"#);
        assert_eq!(json("hosts").unwrap(), r#"["a","b"]"#);
        assert_eq!(json("user").unwrap(), "u", "strings stay as they are");
        assert_eq!(
            json("none"),
            Err(EvalError::Null),
            "a selection of nothing stays an error"
        );
        assert_eq!(eval("tls", v), Err(EvalError::NotString), "the default stays an error");
    }

    #[test]
    fn strings_are_extracted_and_other_results_refused() {
        let v = r#"{"user":"admin","port":5432,"nested":{"api-key":"k"},"list":["a","b"]}"#;
        assert_eq!(eval("user", v).unwrap(), "admin");
        assert_eq!(eval("nested.\"api-key\"", v).unwrap(), "k");
        assert_eq!(eval("join(',', list)", v).unwrap(), "a,b");
        assert_eq!(eval("list[?@=='b'] | [0]", v).unwrap(), "b");
        assert_eq!(eval("port", v), Err(EvalError::NotString));
        assert_eq!(eval("missing", v), Err(EvalError::Null));
        assert_eq!(eval("nope(user)", v), Err(EvalError::Runtime));
        assert_eq!(eval("user", "not json"), Err(EvalError::NotJson));
    }

    #[test]
    fn length_and_syntax_are_checked() {
        let l = limits();
        assert_eq!(compile(&"a".repeat(1025), &l).unwrap_err(), CompileError::Length(1025));
        assert_eq!(compile("a[", &l).unwrap_err(), CompileError::Syntax);
        assert!(compile("\"api-key\"", &l).is_ok());
    }

    #[test]
    fn nesting_counts_brackets_unary_operators_and_projections() {
        assert_eq!(nesting("a.b.c"), 0);
        assert_eq!(nesting("a[0]"), 1);
        assert_eq!(nesting("a[*].b"), 1);
        assert_eq!(nesting("a[*].b[*].c"), 2);
        assert_eq!(nesting("a[*].b | c[*].d"), 1);
        assert_eq!(nesting("!!!a"), 3);
        assert_eq!(nesting("((((a))))"), 4);
        assert_eq!(nesting("'(((('"), 0);
        assert_eq!(nesting("`[[[[1]]]]`"), 0);
        assert_eq!(nesting("\"a\\\"((\""), 0);
        assert_eq!(nesting("sort_by(@, &a | &b | &c)"), 1 + 5);
        assert_eq!(nesting(&"a.".repeat(400)), 0);
        let deep = format!("{}a{}", "(".repeat(17), ")".repeat(17));
        assert_eq!(compile(&deep, &limits()).unwrap_err(), CompileError::Depth(17));
    }

    /// Every construct that makes the parser recurse, nested as deeply as
    /// `--max-jmespath-depth` may be set, compiles and evaluates on a
    /// thread with a 2 MiB stack (the smallest the provider uses; test
    /// threads and the async runtime's blocking threads have it).
    #[test]
    fn the_deepest_accepted_expressions_fit_a_small_stack() {
        let cap = crate::limits::JMESPATH_DEPTH_CAP;
        let limits = Limits {
            max_jmespath_depth: cap,
            max_jmespath_length: 1 << 20,
            max_jmespath_work: u64::MAX,
            ..Limits::default()
        };
        let shapes: Vec<(&str, String)> = vec![
            ("not", format!("{}a", "!".repeat(cap))),
            ("paren", format!("{}a{}", "(".repeat(cap), ")".repeat(cap))),
            ("list", format!("{}a{}", "[".repeat(cap), "]".repeat(cap))),
            ("hash", format!("{}a{}", "{a:".repeat(cap), "}".repeat(cap))),
            ("projection", "a[*].".repeat(cap) + "b"),
            ("filter", "a[?b].".repeat(cap) + "c"),
            ("function", format!("{}@{}", "to_array(".repeat(cap), ")".repeat(cap))),
            (
                "precedence",
                format!("{}a{}", "(a | b || c && d == ".repeat(cap / 2), ")".repeat(cap / 2)),
            ),
            ("expref", format!("sort_by(@, {})", vec!["&a"; cap / 2].join(" | "))),
        ];
        for (name, expr) in shapes {
            let depth = nesting(&expr);
            assert!(depth <= cap, "{name}: {depth}");
            let ok = on_a_small_stack(expr, limits, br#"{"a":[{"a":"x","b":"y","c":"z"}],"b":"x"}"#);
            assert!(ok.is_ok(), "{name}: {ok:?}");
        }
    }

    #[test]
    fn doubling_expressions_are_refused_before_they_run() {
        // Each step doubles the output: 2^20 copies of the value.
        let step = "[@,@][]";
        let bomb = format!("to_string({})", [step; 20].join("|"));
        assert!(bomb.len() < 200, "{}", bomb.len());
        assert!(matches!(compile(&bomb, &limits()), Err(CompileError::Work(_))));
        // A few doublings compile, and are refused for a value large enough.
        let small = format!("to_string({})", [step; 8].join(" | "));
        let p = compile(&small, &limits()).unwrap();
        assert!(p.evaluate(br#""ten bytes""#, &limits()).is_ok());
        let big = format!("\"{}\"", "x".repeat(64 * 1024));
        assert!(matches!(p.evaluate(big.as_bytes(), &limits()), Err(EvalError::Work(_))));
    }

    #[test]
    fn ordinary_expressions_pass_on_the_largest_secrets() {
        let largest = 64 * 1024;
        for path in [
            "password",
            "\"api-key\"",
            "credentials.database[0].host",
            "users[?role=='admin'].name | [0]",
            "join(',', hosts[*].address)",
            "{u: user, p: pass} | join(':', values(@))",
            "sort_by(items, &name)[0].name",
            "to_string(port)",
        ] {
            let p = compile(path, &limits()).unwrap();
            let bound = p.work_bound(largest);
            assert!(bound <= limits().max_jmespath_work, "{path}: {bound}");
        }
    }

    #[test]
    fn the_bound_covers_what_an_evaluation_produces() {
        let value = r#"{"a":["x","y","z"],"b":{"c":"d"}}"#;
        for path in [
            "to_string(a)",
            "join('--', a)",
            "to_string([a, a, b])",
            "to_string(a[*].[@, @])",
        ] {
            let p = compile(path, &limits()).unwrap();
            let out = p.evaluate(value.as_bytes(), &limits()).unwrap();
            assert!((out.len() as u64) <= p.work_bound(value.len()), "{path}");
        }
    }

    /// Found by fuzzing (`fuzz/corpus/jmespath/crash-slice-step-overflow`):
    /// jmespath 0.5 steps through a slice with `i += step` in an `i32`, so a
    /// step near `i32::MAX` overflowed and then indexed out of bounds, a
    /// panic whatever the build. Such steps are refused; smaller ones
    /// (which select the same elements of any array a value can hold) work.
    #[test]
    fn slice_steps_that_overflow_are_refused() {
        let value = br#"["a","b"]"#;
        for path in [
            "@[1::2147483647]",
            "to_string(@[1::2147483647])",
            "a[?b].c[1::1073741824]",
        ] {
            let compiled = compile(path, &limits());
            if let Ok(p) = &compiled {
                let _ = p.evaluate(value, &limits());
            }
            assert_eq!(compiled.map(|_| ()), Err(CompileError::Syntax), "{path}");
        }
        let p = compile("to_string(@[1::1073741823])", &limits()).unwrap();
        assert_eq!(p.evaluate(value, &limits()).unwrap().expose(), br#"["b"]"#);
        let p = compile("to_string(@[::-2147483647])", &limits()).unwrap();
        assert_eq!(p.evaluate(value, &limits()).unwrap().expose(), br#"["b"]"#);
    }

    /// Found by fuzzing (`fuzz/corpus/jmespath/crash-operator-chain`): an
    /// operator chain (`a.a.a…`, `@|@|…`, `a||a||…`) nests nothing, yet the
    /// evaluator recurses once per operator. Within the default length a
    /// chain of 300 overflowed a 2 MiB stack in a debug build; with a raised
    /// `--max-jmespath-length`, 4,100 overflowed it in a release build,
    /// aborting the provider. The syntax tree's depth is capped, and a tree
    /// at the cap evaluates on a 2 MiB stack.
    #[test]
    fn operator_chains_deeper_than_the_tree_cap_are_refused() {
        let long = Limits {
            max_jmespath_length: 1 << 16,
            ..limits()
        };
        for (name, unit, end) in [
            ("subexpression", "a.", "a"),
            ("pipe", "@|", "@"),
            ("or", "a||", "a"),
            ("and", "a&&", "a"),
        ] {
            for (levels, limits) in [(300, limits()), (MAX_TREE_DEPTH + 1, limits()), (5000, long)] {
                let expr = format!("{}{end}", unit.repeat(levels));
                assert_eq!(nesting(&expr), 0, "{name}");
                let depth = match compile(&expr, &limits) {
                    Err(CompileError::TreeDepth(d)) => d,
                    other => panic!("{name} of {levels}: {:?}", other.map(|_| ())),
                };
                assert!(depth > MAX_TREE_DEPTH, "{name} of {levels}: {depth}");
            }
            let expr = format!("{}{end}", unit.repeat(MAX_TREE_DEPTH - 1));
            let ok = on_a_small_stack(expr, limits(), br#"{"a":{"a":"b"}}"#);
            assert!(ok.is_ok(), "{name}: {ok:?}");
        }
    }

    #[test]
    fn equality_and_debug_use_the_text() {
        let a = compile("a.b", &limits()).unwrap();
        let b = compile("a.b", &limits()).unwrap();
        assert_eq!(a, b);
        assert_eq!(format!("{a:?}"), "JmesPath(\"a.b\")");
    }
}
