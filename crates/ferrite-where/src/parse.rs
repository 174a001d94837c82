//! From libpg_query's parse tree to a typed [`Expr`]: column resolution against the table,
//! Postgres' typing of literals and operators, parameter binding, and refusal (with a message
//! naming the construct) of everything we cannot evaluate exactly like Postgres.

use super::eval::{eval, Row};
use super::expr::{ArithOp, ArrayOp, BoolTest, CmpOp, Expr, ExprKind, Func};
use super::limits::{MAX_BPCHAR_CAST, MAX_NODES};
use super::numeric::Num;
use super::rule::{claim_path, ClaimValue};
use super::subquery::{check_comparable as check_subquery_comparable, range_var_name, too_deep, Catalog, Subquery};
use super::types::{common_type, comparison_type, numeric_operator_type, Category, Ty, Typmod};
use super::value::{self, can_cast, Value};
use super::{EvalError, WhereError};
use ferrite_protocol::schema::{TableSchema, TypeKind};
use pg_query::protobuf::a_const::Val;
use pg_query::protobuf::node::Node as N;
use pg_query::protobuf::{
    AArrayExpr, AConst, AExpr, AExprKind, BoolExprType, BoolTestType, ColumnRef, FuncCall, MinMaxOp, Node,
    NullTestType, SqlValueFunctionOp, TypeCast, TypeName,
};
use std::collections::BTreeMap;

/// Compiles one where clause against one table.
pub(crate) struct Compiler<'a> {
    pub table: &'a TableSchema,
    pub params: &'a BTreeMap<String, String>,
    /// The caller's claim values when compiling a table rule (`claims.<name>` references);
    /// `None` for a client's where clause, where `claims.x` is an ordinary column reference.
    pub claims: Option<&'a [ClaimValue]>,
    /// Nodes copied so far for operands used more than once ([`Compiler::dup`]).
    pub copied: std::cell::Cell<usize>,
    /// Where subqueries find their tables; `None`: subqueries are refused.
    pub catalog: Option<&'a dyn Catalog>,
    /// The name the table goes by in a subquery's `FROM t AS alias`.
    pub alias: Option<&'a str>,
    /// The enclosing query's table, when compiling a subquery's where clause.
    pub outer: Option<&'a TableSchema>,
    /// How deeply this clause is nested in subqueries (0: the shape's own where clause).
    pub depth: usize,
    /// The subqueries compiled so far, in the order their nodes refer to them.
    pub subqueries: std::cell::RefCell<Vec<Subquery>>,
    /// Subqueries compiled so far in the whole clause, nested ones included.
    pub budget: &'a std::cell::Cell<usize>,
}

impl<'a> Compiler<'a> {
    /// A compiler for a top-level clause over `table`.
    pub(crate) fn new(
        table: &'a TableSchema,
        params: &'a BTreeMap<String, String>,
        claims: Option<&'a [ClaimValue]>,
        catalog: Option<&'a dyn Catalog>,
        budget: &'a std::cell::Cell<usize>,
    ) -> Compiler<'a> {
        Compiler {
            table,
            params,
            claims,
            copied: Default::default(),
            catalog,
            alias: None,
            outer: None,
            depth: 0,
            subqueries: Default::default(),
            budget,
        }
    }

    /// The subqueries the compiled clause refers to.
    pub(crate) fn finish(self) -> Vec<Subquery> {
        self.subqueries.into_inner()
    }
}

fn unsupported(msg: impl Into<String>) -> WhereError {
    WhereError::Unsupported(msg.into())
}

fn unknown(text: Option<String>, param: Option<u32>) -> Expr {
    Expr::new(ExprKind::Unknown { text, param }, Ty::Unknown)
}

fn boxed(e: Expr) -> Box<Expr> {
    Box::new(e)
}

/// The string values of a list of `String` nodes (names, operator names).
fn strings(nodes: &[Node]) -> Option<Vec<String>> {
    nodes
        .iter()
        .map(|n| match &n.node {
            Some(N::String(s)) => Some(s.sval.clone()),
            _ => None,
        })
        .collect()
}

/// A function or operator name, allowing only the `pg_catalog` qualification.
fn builtin_name(nodes: &[Node], what: &str) -> Result<String, WhereError> {
    let names = strings(nodes).ok_or_else(|| unsupported(format!("unsupported {what} name")))?;
    match names.as_slice() {
        [n] => Ok(n.clone()),
        [s, n] if s == "pg_catalog" => Ok(n.clone()),
        _ => Err(unsupported(format!("{what} \"{}\" is not supported", names.join(".")))),
    }
}

/// Variant name of a parse node, for "unsupported expression" messages.
fn node_kind(n: &N) -> String {
    let dbg = format!("{n:?}");
    dbg.split(['(', ' ', '{']).next().unwrap_or("expression").to_string()
}

fn type_list(tys: &[&Ty]) -> String {
    let mut names: Vec<String> = Vec::new();
    for t in tys {
        let d = t.display();
        if !names.contains(&d) {
            names.push(d);
        }
    }
    names.join(" and ")
}

fn unsupported_op(op: &str, tys: &[&Ty]) -> WhereError {
    unsupported(format!("operator \"{op}\" is not supported for types {}", type_list(tys)))
}

/// Refuses types that may only be tested for NULL.
fn only_null_tests(t: &Ty) -> Result<(), WhereError> {
    match t {
        Ty::Opaque(n) => Err(unsupported(format!("values of type {n} can only be used with IS [NOT] NULL"))),
        Ty::Array(e) => only_null_tests(e),
        _ => Ok(()),
    }
}

/// Refuses comparisons whose ordering we cannot know (enum order lives in the catalog).
fn check_comparable(t: &Ty, op: CmpOp) -> Result<(), WhereError> {
    only_null_tests(t)?;
    match t {
        Ty::Enum(n) if op.is_ordering() => Err(unsupported(format!(
            "operator \"{}\" is not supported for enum type {n}: enums can only be compared with = and <>",
            op.sql()
        ))),
        Ty::Array(e) => check_comparable(e, op),
        _ => Ok(()),
    }
}

impl Compiler<'_> {
    /// A copy of `e`, an operand Postgres evaluates more than once (BETWEEN, NULLIF, IN lists).
    /// Copies count against [`MAX_NODES`] as they are made: nested BETWEENs double the tree at
    /// every level, so it must be stopped while it grows, not after.
    fn dup(&self, e: &Expr) -> Result<Expr, WhereError> {
        let copied = self.copied.get() + e.size();
        if copied > MAX_NODES {
            return Err(WhereError::Limit(format!(
                "where clause too complex: its operands repeat to more than {MAX_NODES} expression nodes (the limit is {MAX_NODES})"
            )));
        }
        self.copied.set(copied);
        Ok(e.clone())
    }

    /// Compiles the where clause's root node into a boolean expression with constants folded.
    pub(crate) fn compile(&self, node: &Node) -> Result<Expr, WhereError> {
        let e = self.expr(node)?;
        let e = self.to_bool(e, "WHERE")?;
        fold(e)
    }

    /// Brings an expression to type `to`: unknown literals are read as `to`, anything else gets an
    /// implicit cast node.
    fn coerce(&self, e: Expr, to: &Ty) -> Result<Expr, WhereError> {
        if e.ty == *to {
            return Ok(e);
        }
        match e.kind {
            ExprKind::Unknown { text, param } => {
                let v = match text {
                    None => Value::Null,
                    Some(t) => value::input(to, &t).map_err(|err| match (param, err) {
                        (Some(n), err) => WhereError::InvalidParam { param: n, message: err.to_string() },
                        (None, EvalError::Unsupported(m)) => WhereError::Unsupported(m),
                        (None, err) => WhereError::InvalidLiteral(err.to_string()),
                    })?,
                };
                Ok(Expr::new(ExprKind::Const(v), to.clone()))
            }
            kind => Ok(Expr::new(
                ExprKind::Cast { arg: boxed(Expr::new(kind, e.ty)), typmod: Typmod::None, explicit: false },
                to.clone(),
            )),
        }
    }

    /// Requires a boolean (reading an unknown literal as one).
    fn to_bool(&self, e: Expr, context: &str) -> Result<Expr, WhereError> {
        match e.ty {
            Ty::Bool => Ok(e),
            Ty::Unknown => self.coerce(e, &Ty::Bool),
            ref t => {
                Err(WhereError::Type(format!("argument of {context} must be type boolean, not type {}", t.display())))
            }
        }
    }

    fn child(&self, n: &Option<Box<Node>>) -> Result<Expr, WhereError> {
        match n {
            Some(n) => self.expr(n),
            None => Err(unsupported("unsupported expression: missing operand")),
        }
    }

    fn expr(&self, node: &Node) -> Result<Expr, WhereError> {
        let Some(n) = node.node.as_ref() else {
            return Err(unsupported("unsupported expression: empty node"));
        };
        match n {
            N::ColumnRef(c) => self.column(c),
            N::AConst(c) => self.constant(c),
            N::ParamRef(p) => self.param(p.number),
            N::TypeCast(tc) => self.type_cast(tc),
            N::AExpr(a) => self.a_expr(a),
            N::BoolExpr(b) => {
                let op = BoolExprType::try_from(b.boolop).unwrap_or(BoolExprType::Undefined);
                let (name, is_and) = match op {
                    BoolExprType::AndExpr => ("AND", true),
                    BoolExprType::OrExpr => ("OR", false),
                    BoolExprType::NotExpr => {
                        let [arg] = b.args.as_slice() else {
                            return Err(unsupported("unsupported expression: NOT takes one argument"));
                        };
                        let arg = self.expr(arg)?;
                        return Ok(Expr::new(ExprKind::Not(boxed(self.to_bool(arg, "NOT")?)), Ty::Bool));
                    }
                    BoolExprType::Undefined => return Err(unsupported("unsupported boolean expression")),
                };
                let mut args = Vec::with_capacity(b.args.len());
                for a in &b.args {
                    let e = self.expr(a)?;
                    args.push(self.to_bool(e, name)?);
                }
                Ok(Expr::new(if is_and { ExprKind::And(args) } else { ExprKind::Or(args) }, Ty::Bool))
            }
            N::NullTest(t) => {
                let arg = self.child(&t.arg)?;
                let arg = if arg.ty == Ty::Unknown { self.coerce(arg, &Ty::Text)? } else { arg };
                let negated = NullTestType::try_from(t.nulltesttype) == Ok(NullTestType::IsNotNull);
                Ok(Expr::new(ExprKind::IsNull { arg: boxed(arg), negated }, Ty::Bool))
            }
            N::BooleanTest(t) => {
                let test = match BoolTestType::try_from(t.booltesttype) {
                    Ok(BoolTestType::IsTrue) => BoolTest::IsTrue,
                    Ok(BoolTestType::IsNotTrue) => BoolTest::IsNotTrue,
                    Ok(BoolTestType::IsFalse) => BoolTest::IsFalse,
                    Ok(BoolTestType::IsNotFalse) => BoolTest::IsNotFalse,
                    Ok(BoolTestType::IsUnknown) => BoolTest::IsUnknown,
                    Ok(BoolTestType::IsNotUnknown) => BoolTest::IsNotUnknown,
                    _ => return Err(unsupported("unsupported boolean test")),
                };
                let arg = self.child(&t.arg)?;
                let arg = self.to_bool(arg, test.sql())?;
                Ok(Expr::new(ExprKind::BoolTest { arg: boxed(arg), test }, Ty::Bool))
            }
            N::FuncCall(f) => self.func_call(f),
            N::CoalesceExpr(c) => {
                let args = self.exprs(&c.args)?;
                let (args, t) = self.unify(args, "COALESCE")?;
                Ok(Expr::new(ExprKind::Coalesce(args), t))
            }
            N::MinMaxExpr(m) => {
                let greatest = MinMaxOp::try_from(m.op) == Ok(MinMaxOp::IsGreatest);
                let name = if greatest { "GREATEST" } else { "LEAST" };
                let args = self.exprs(&m.args)?;
                let (args, t) = self.unify(args, name)?;
                check_comparable(&t, CmpOp::Lt)?;
                Ok(Expr::new(ExprKind::MinMax { greatest, args }, t))
            }
            N::AArrayExpr(a) => self.array_expr(a),
            N::SubLink(sub) => self.sub_link(sub),
            N::CaseExpr(_) => Err(unsupported("unsupported expression: CASE is not supported")),
            N::CollateClause(_) => Err(unsupported("unsupported expression: COLLATE is not supported")),
            N::RowExpr(_) => Err(unsupported("unsupported expression: row constructors are not supported")),
            N::AIndirection(_) => {
                Err(unsupported("unsupported expression: array subscripts and field selection are not supported"))
            }
            N::SqlvalueFunction(f) => {
                let op = SqlValueFunctionOp::try_from(f.op);
                let name = op
                    .map(|o| o.as_str_name().trim_start_matches("SVFOP_").to_string())
                    .unwrap_or_else(|_| "this function".into());
                let ty = match op {
                    Ok(SqlValueFunctionOp::SvfopCurrentTimestamp) => Ty::Timestamptz,
                    Ok(SqlValueFunctionOp::SvfopLocaltimestamp) => Ty::Timestamp,
                    Ok(SqlValueFunctionOp::SvfopCurrentDate) => Ty::Date,
                    _ => {
                        return Err(unsupported(format!(
                            "{name} is not supported: it depends on the current time or session (now(), CURRENT_TIMESTAMP, LOCALTIMESTAMP and CURRENT_DATE are, in write rules)"
                        )))
                    }
                };
                self.now(&name, ty)
            }
            N::GroupingFunc(_) => Err(unsupported("unsupported expression: GROUPING is not supported")),
            other => Err(unsupported(format!("unsupported expression: {}", node_kind(other)))),
        }
    }

    fn exprs(&self, nodes: &[Node]) -> Result<Vec<Expr>, WhereError> {
        nodes.iter().map(|n| self.expr(n)).collect()
    }

    /// Brings expressions to their common type (`select_common_type`).
    fn unify(&self, args: Vec<Expr>, context: &str) -> Result<(Vec<Expr>, Ty), WhereError> {
        let tys: Vec<&Ty> = args.iter().map(|a| &a.ty).collect();
        let t = common_type(&tys, context)?;
        only_null_tests(&t)?;
        let args = args.into_iter().map(|a| self.coerce(a, &t)).collect::<Result<Vec<_>, _>>()?;
        Ok((args, t))
    }

    fn column(&self, c: &ColumnRef) -> Result<Expr, WhereError> {
        let mut parts = Vec::new();
        for f in &c.fields {
            match &f.node {
                Some(N::String(s)) => parts.push(s.sval.clone()),
                Some(N::AStar(_)) => return Err(unsupported("unsupported expression: * is not allowed here")),
                _ => return Err(unsupported("unsupported column reference")),
            }
        }
        if let Some(claims) = self.claims {
            if let Some(path) = claim_path(&parts) {
                // A bound value, read as the type of its context like a `$n` parameter.
                let bound = claims
                    .iter()
                    .find(|c| c.path == path)
                    .ok_or_else(|| unsupported(format!("claims.{} is not bound for this rule", path.join("."))))?;
                return Ok(unknown(bound.value.clone(), None));
            }
        }
        let t = &self.table.name;
        let alias = self.alias;
        let name = match parts.as_slice() {
            [col] => col,
            [table, col] if Some(table.as_str()) == alias => col,
            [table, col] if *table == t.name && alias.is_none() => col,
            [schema, table, col] if *schema == t.schema && *table == t.name && alias.is_none() => col,
            _ if self.is_outer_reference(&parts) => {
                return Err(unsupported(
                    "correlated subqueries are only supported as EXISTS (SELECT … FROM t WHERE t.column = outer_table.column AND …)",
                ))
            }
            _ => return Err(WhereError::UnknownColumn(parts.join("."))),
        };
        let i = self.table.column_index(name).ok_or_else(|| WhereError::UnknownColumn(name.clone()))?;
        Ok(Expr::new(ExprKind::Column(i), Ty::of_column(&self.table.columns[i])))
    }

    fn constant(&self, c: &AConst) -> Result<Expr, WhereError> {
        if c.isnull {
            return Ok(unknown(None, None));
        }
        match &c.val {
            Some(Val::Ival(i)) => Ok(Expr::new(ExprKind::Const(Value::Int(i.ival as i64)), Ty::Int4)),
            Some(Val::Fval(f)) => numeric_literal(&f.fval),
            Some(Val::Boolval(b)) => Ok(Expr::new(ExprKind::Const(Value::Bool(b.boolval)), Ty::Bool)),
            Some(Val::Sval(s)) => Ok(unknown(Some(s.sval.clone()), None)),
            Some(Val::Bsval(_)) => Err(unsupported("unsupported expression: bit string literals are not supported")),
            None => Ok(unknown(None, None)),
        }
    }

    fn param(&self, number: i32) -> Result<Expr, WhereError> {
        let value = u32::try_from(number).ok().filter(|n| *n > 0).and_then(|n| self.params.get(&n.to_string()));
        match value {
            Some(v) if v.contains('\0') => Err(WhereError::InvalidParam {
                param: number as u32,
                message: "invalid byte sequence: the value contains a NUL character".into(),
            }),
            Some(v) => Ok(unknown(Some(v.clone()), Some(number as u32))),
            None => Err(WhereError::MissingParam(number)),
        }
    }

    fn type_cast(&self, tc: &TypeCast) -> Result<Expr, WhereError> {
        let tn = tc.type_name.as_ref().ok_or_else(|| unsupported("cast without a type"))?;
        let (ty, typmod) = self.type_name(tn)?;
        // `ARRAY[]::int[]`: an empty array gets its type from the cast.
        if let Some(N::AArrayExpr(a)) = tc.arg.as_deref().and_then(|n| n.node.as_ref()) {
            if a.elements.is_empty() && matches!(ty, Ty::Array(_)) {
                return Ok(Expr::new(ExprKind::Const(Value::Array(Vec::new())), ty));
            }
        }
        let arg = self.child(&tc.arg)?;
        if arg.ty == Ty::Unknown {
            let e = self.coerce(arg, &ty)?;
            if typmod == Typmod::None {
                return Ok(e);
            }
            return Ok(Expr::new(ExprKind::Cast { arg: boxed(e), typmod, explicit: true }, ty));
        }
        if !can_cast(&arg.ty, &ty) {
            return Err(match &arg.ty {
                Ty::Opaque(_) => only_null_tests(&arg.ty).err().unwrap_or_else(|| unsupported("unsupported cast")),
                _ => WhereError::Type(format!("cannot cast type {} to {}", arg.ty.display(), ty.display())),
            });
        }
        if arg.ty == ty && typmod == Typmod::None {
            return Ok(arg);
        }
        Ok(Expr::new(ExprKind::Cast { arg: boxed(arg), typmod, explicit: true }, ty))
    }

    /// Resolves a type name of a cast (built-in names, or an enum type used by the table).
    fn type_name(&self, tn: &TypeName) -> Result<(Ty, Typmod), WhereError> {
        if tn.setof || tn.pct_type {
            return Err(unsupported("unsupported type name"));
        }
        let names = strings(&tn.names).ok_or_else(|| unsupported("unsupported type name"))?;
        let name = match names.as_slice() {
            [n] => n.clone(),
            [s, n] if s == "pg_catalog" => n.clone(),
            [_, n] => n.clone(),
            _ => return Err(unsupported(format!("type \"{}\" is not supported", names.join(".")))),
        };
        let base = match Ty::from_name(&name) {
            Some(t) => t,
            None => {
                let is_enum = self.table.columns.iter().any(|c| c.kind == TypeKind::Enum && c.type_name == name);
                if is_enum {
                    Ty::Enum(name.clone())
                } else {
                    return Err(unsupported(format!("type \"{name}\" is not supported")));
                }
            }
        };
        let mut mods = Vec::new();
        for m in &tn.typmods {
            match &m.node {
                Some(N::AConst(AConst { val: Some(Val::Ival(i)), .. })) => mods.push(i.ival),
                _ => return Err(unsupported(format!("type modifiers of {name} are not supported"))),
            }
        }
        let bad_mod = || {
            unsupported(format!("type modifier ({}) for type {} is not supported", join_ints(&mods), base.display()))
        };
        let typmod = match (&base, mods.as_slice()) {
            (_, []) => Typmod::None,
            (Ty::Varchar, [n]) if (1..=MAX_CHAR_LENGTH).contains(n) => Typmod::Varchar(*n as usize),
            // char(n) pads every value to n characters: bounded, or one cast could allocate
            // megabytes per row.
            (Ty::Bpchar, [n]) if *n > MAX_BPCHAR_CAST as i32 && *n <= MAX_CHAR_LENGTH => {
                return Err(WhereError::Limit(format!(
                    "char({n}) too long: casts to char pad every value (the limit is {MAX_BPCHAR_CAST})"
                )))
            }
            (Ty::Bpchar, [n]) if (1..=MAX_CHAR_LENGTH).contains(n) => Typmod::Bpchar(*n as usize),
            (Ty::Numeric, [p]) if (1..=1000).contains(p) => Typmod::Numeric(*p as u32, 0),
            (Ty::Numeric, [p, s]) if (1..=1000).contains(p) && (0..=*p).contains(s) => {
                Typmod::Numeric(*p as u32, *s as u32)
            }
            _ => return Err(bad_mod()),
        };
        if tn.array_bounds.is_empty() {
            Ok((base, typmod))
        } else if typmod != Typmod::None {
            Err(bad_mod())
        } else {
            Ok((Ty::Array(Box::new(base)), Typmod::None))
        }
    }

    fn a_expr(&self, a: &AExpr) -> Result<Expr, WhereError> {
        let kind = AExprKind::try_from(a.kind).unwrap_or(AExprKind::Undefined);
        let op = builtin_name(&a.name, "operator")?;
        match kind {
            AExprKind::AexprOp => match (&a.lexpr, &a.rexpr) {
                (None, Some(r)) => {
                    let r = self.expr(r)?;
                    self.prefix_op(&op, r)
                }
                (Some(l), Some(r)) => {
                    let l = self.expr(l)?;
                    let r = self.expr(r)?;
                    self.binary_op(&op, l, r)
                }
                _ => Err(unsupported(format!("unsupported expression: postfix operator \"{op}\""))),
            },
            AExprKind::AexprOpAny | AExprKind::AexprOpAll => {
                let l = self.child(&a.lexpr)?;
                let r = self.child(&a.rexpr)?;
                self.any_all(&op, l, r, kind == AExprKind::AexprOpAll)
            }
            AExprKind::AexprDistinct | AExprKind::AexprNotDistinct => {
                let l = self.child(&a.lexpr)?;
                let r = self.child(&a.rexpr)?;
                let t = comparison_type("=", &l.ty, &r.ty)?;
                check_comparable(&t, CmpOp::Eq)?;
                let l = self.coerce(l, &t)?;
                let r = self.coerce(r, &t)?;
                let negated = kind == AExprKind::AexprNotDistinct;
                Ok(Expr::new(ExprKind::Distinct { negated, left: boxed(l), right: boxed(r) }, Ty::Bool))
            }
            AExprKind::AexprNullif => {
                let l = self.child(&a.lexpr)?;
                let r = self.child(&a.rexpr)?;
                let cmp = self.compare(CmpOp::Eq, self.dup(&l)?, r)?;
                let value = if l.ty == Ty::Unknown {
                    let t = match &cmp.kind {
                        ExprKind::Cmp { left, .. } => left.ty.clone(),
                        _ => Ty::Text,
                    };
                    self.coerce(l, &t)?
                } else {
                    l
                };
                let ty = value.ty.clone();
                Ok(Expr::new(ExprKind::NullIf { value: boxed(value), cmp: boxed(cmp) }, ty))
            }
            AExprKind::AexprIn => {
                let l = self.child(&a.lexpr)?;
                let items = match a.rexpr.as_deref().and_then(|r| r.node.as_ref()) {
                    Some(N::List(list)) => self.exprs(&list.items)?,
                    Some(N::SubLink(_)) => {
                        return Err(unsupported("unsupported expression: subqueries are not supported yet"))
                    }
                    _ => return Err(unsupported("unsupported expression: IN needs a list of values")),
                };
                self.in_list(l, items, op == "<>")
            }
            AExprKind::AexprLike | AExprKind::AexprIlike => {
                let l = self.child(&a.lexpr)?;
                let (pattern, escape) = self.like_pattern(&a.rexpr)?;
                self.like(&op, l, pattern, escape)
            }
            AExprKind::AexprSimilar => Err(unsupported("unsupported expression: SIMILAR TO is not supported")),
            AExprKind::AexprBetween
            | AExprKind::AexprNotBetween
            | AExprKind::AexprBetweenSym
            | AExprKind::AexprNotBetweenSym => {
                let x = self.child(&a.lexpr)?;
                let (lo, hi) = match a.rexpr.as_deref().and_then(|r| r.node.as_ref()) {
                    Some(N::List(list)) if list.items.len() == 2 => {
                        (self.expr(&list.items[0])?, self.expr(&list.items[1])?)
                    }
                    _ => return Err(unsupported("unsupported expression: malformed BETWEEN")),
                };
                self.between(kind, x, lo, hi)
            }
            AExprKind::Undefined => Err(unsupported("unsupported expression")),
        }
    }

    fn like_pattern(&self, r: &Option<Box<Node>>) -> Result<(Expr, Option<Expr>), WhereError> {
        if let Some(N::FuncCall(f)) = r.as_deref().and_then(|n| n.node.as_ref()) {
            if builtin_name(&f.funcname, "function").as_deref() == Ok("like_escape") && f.args.len() == 2 {
                let p = self.expr(&f.args[0])?;
                let e = self.expr(&f.args[1])?;
                return Ok((p, Some(e)));
            }
        }
        Ok((self.child(r)?, None))
    }

    fn prefix_op(&self, op: &str, arg: Expr) -> Result<Expr, WhereError> {
        let numeric_or_interval = arg.ty.category() == Category::Numeric || arg.ty == Ty::Interval;
        match op {
            "-" if numeric_or_interval => {
                let ty = arg.ty.clone();
                Ok(Expr::new(ExprKind::Neg(boxed(arg)), ty))
            }
            "+" if numeric_or_interval => Ok(arg),
            "-" | "+" if arg.ty == Ty::Unknown => {
                Err(WhereError::Type(format!("operator is not unique: {op} unknown")))
            }
            "-" | "+" if !matches!(arg.ty, Ty::Opaque(_)) => {
                Err(WhereError::NoOperator(format!("{op} {}", arg.ty.display())))
            }
            _ => Err(unsupported_op(op, &[&arg.ty])),
        }
    }

    fn binary_op(&self, op: &str, l: Expr, r: Expr) -> Result<Expr, WhereError> {
        if let Some(c) = CmpOp::from_sql(op) {
            return self.compare(c, l, r);
        }
        if let Some(a) = ArithOp::from_sql(op) {
            return self.arith(a, l, r);
        }
        match op {
            "||" => self.concat(l, r),
            "~~" | "!~~" | "~~*" | "!~~*" => self.like(op, l, r, None),
            "@>" => self.array_op(ArrayOp::Contains, l, r),
            "<@" => self.array_op(ArrayOp::ContainedBy, l, r),
            "&&" => self.array_op(ArrayOp::Overlaps, l, r),
            _ => Err(unsupported_op(op, &[&l.ty, &r.ty])),
        }
    }

    fn compare(&self, op: CmpOp, l: Expr, r: Expr) -> Result<Expr, WhereError> {
        let t = comparison_type(op.sql(), &l.ty, &r.ty)?;
        check_comparable(&t, op)?;
        let l = self.coerce(l, &t)?;
        let r = self.coerce(r, &t)?;
        Ok(Expr::new(ExprKind::Cmp { op, left: boxed(l), right: boxed(r) }, Ty::Bool))
    }

    fn arith(&self, op: ArithOp, l: Expr, r: Expr) -> Result<Expr, WhereError> {
        let sym = op.sql();
        for t in [&l.ty, &r.ty] {
            if let Ty::Opaque(_) = t {
                return Err(unsupported_op(sym, &[&l.ty, &r.ty]));
            }
        }
        let no_op = || WhereError::NoOperator(format!("{} {sym} {}", l.ty.display(), r.ty.display()));
        let not_unique =
            || WhereError::Type(format!("operator is not unique: {} {sym} {}", l.ty.display(), r.ty.display()));
        let (lt, rt) = match (&l.ty, &r.ty) {
            (Ty::Unknown, Ty::Unknown) => return Err(not_unique()),
            (Ty::Unknown, t) => {
                if arith_signature(op, t, t).is_some() {
                    (t.clone(), t.clone())
                } else if op == ArithOp::Add && matches!(t, Ty::Timestamp | Ty::Timestamptz | Ty::Date) {
                    if *t == Ty::Date {
                        return Err(not_unique());
                    }
                    (Ty::Interval, t.clone())
                } else {
                    return Err(no_op());
                }
            }
            (t, Ty::Unknown) => {
                if arith_signature(op, t, t).is_some() {
                    (t.clone(), t.clone())
                } else if op == ArithOp::Add && matches!(t, Ty::Timestamp | Ty::Timestamptz | Ty::Date) {
                    if *t == Ty::Date {
                        return Err(not_unique());
                    }
                    (t.clone(), Ty::Interval)
                } else {
                    return Err(no_op());
                }
            }
            (a, b) => (a.clone(), b.clone()),
        };
        let (lt, rt, result) = arith_signature(op, &lt, &rt).ok_or_else(no_op)?;
        let l = self.coerce(l, &lt)?;
        let r = self.coerce(r, &rt)?;
        Ok(Expr::new(ExprKind::Arith { op, left: boxed(l), right: boxed(r) }, result))
    }

    fn concat(&self, l: Expr, r: Expr) -> Result<Expr, WhereError> {
        for t in [&l.ty, &r.ty] {
            if let Ty::Opaque(_) = t {
                return Err(unsupported_op("||", &[&l.ty, &r.ty]));
            }
        }
        let no_op = || WhereError::NoOperator(format!("{} || {}", l.ty.display(), r.ty.display()));
        let array_concat =
            |l: Expr, r: Expr, t: Ty| Expr::new(ExprKind::ArrayConcat { left: boxed(l), right: boxed(r) }, t);
        match (l.ty.clone(), r.ty.clone()) {
            (Ty::Array(a), Ty::Array(b)) => {
                if a != b {
                    return Err(no_op());
                }
                Ok(array_concat(l, r, Ty::Array(a)))
            }
            (Ty::Array(a), Ty::Unknown) => {
                let t = Ty::Array(a);
                let r = self.coerce(r, &t)?;
                Ok(array_concat(l, r, t))
            }
            (Ty::Unknown, Ty::Array(a)) => {
                let t = Ty::Array(a);
                let l = self.coerce(l, &t)?;
                Ok(array_concat(l, r, t))
            }
            (Ty::Array(a), t) | (t, Ty::Array(a)) => {
                if *a != t {
                    return Err(no_op());
                }
                Ok(array_concat(l, r, Ty::Array(a)))
            }
            (lt, rt) => {
                let stringy = |t: &Ty| t.is_string() || *t == Ty::Unknown;
                if !stringy(&lt) && !stringy(&rt) {
                    return Err(no_op());
                }
                let l = self.coerce(l, &Ty::Text)?;
                let r = self.coerce(r, &Ty::Text)?;
                Ok(Expr::new(ExprKind::Concat { left: boxed(l), right: boxed(r) }, Ty::Text))
            }
        }
    }

    fn like(&self, op: &str, l: Expr, pattern: Expr, escape: Option<Expr>) -> Result<Expr, WhereError> {
        let (case_insensitive, negated) = match op {
            "~~" => (false, false),
            "!~~" => (false, true),
            "~~*" => (true, false),
            "!~~*" => (true, true),
            _ => return Err(unsupported_op(op, &[&l.ty, &pattern.ty])),
        };
        for t in [&l.ty, &pattern.ty] {
            if let Ty::Opaque(_) = t {
                return Err(unsupported_op(op, &[&l.ty, &pattern.ty]));
            }
        }
        let stringy = |t: &Ty| t.is_string() || *t == Ty::Unknown;
        if !stringy(&l.ty) || !stringy(&pattern.ty) {
            return Err(WhereError::NoOperator(format!("{} {op} {}", l.ty.display(), pattern.ty.display())));
        }
        let l = match l.ty {
            Ty::Bpchar | Ty::Name | Ty::Text => l,
            _ => self.coerce(l, &Ty::Text)?,
        };
        let pattern = self.coerce(pattern, &Ty::Text)?;
        let escape = match escape {
            None => None,
            Some(e) if stringy(&e.ty) => Some(boxed(self.coerce(e, &Ty::Text)?)),
            Some(e) => {
                return Err(WhereError::Type(format!("function like_escape(text, {}) does not exist", e.ty.display())))
            }
        };
        Ok(Expr::new(
            ExprKind::Like { arg: boxed(l), pattern: boxed(pattern), escape, case_insensitive, negated },
            Ty::Bool,
        ))
    }

    fn any_all(&self, op: &str, l: Expr, r: Expr, all: bool) -> Result<Expr, WhereError> {
        let Some(cmp) = CmpOp::from_sql(op) else {
            return Err(unsupported(format!(
                "operator \"{op}\" is not supported with {}",
                if all { "ALL" } else { "ANY" }
            )));
        };
        let r = match &r.ty {
            Ty::Unknown => {
                let elem = if l.ty == Ty::Unknown { Ty::Text } else { l.ty.clone() };
                self.coerce(r, &Ty::Array(Box::new(elem)))?
            }
            Ty::Array(_) => r,
            Ty::Opaque(_) => return Err(unsupported_op(op, &[&l.ty, &r.ty])),
            _ => return Err(WhereError::Type("op ANY/ALL (array) requires array on right side".into())),
        };
        let elem = r.ty.elem().cloned().unwrap_or(Ty::Text);
        let t = comparison_type(cmp.sql(), &l.ty, &elem)?;
        check_comparable(&t, cmp)?;
        let l = self.coerce(l, &t)?;
        let r = if elem == t { r } else { self.coerce(r, &Ty::Array(Box::new(t)))? };
        Ok(Expr::new(ExprKind::AnyAll { op: cmp, all, left: boxed(l), array: boxed(r) }, Ty::Bool))
    }

    fn array_op(&self, op: ArrayOp, l: Expr, r: Expr) -> Result<Expr, WhereError> {
        let sym = op.sql();
        let (l, r) = match (&l.ty, &r.ty) {
            (Ty::Array(_), Ty::Array(_)) => {
                if l.ty != r.ty {
                    return Err(WhereError::NoOperator(format!("{} {sym} {}", l.ty.display(), r.ty.display())));
                }
                (l, r)
            }
            (Ty::Array(_), Ty::Unknown) => {
                let t = l.ty.clone();
                (l, self.coerce(r, &t)?)
            }
            (Ty::Unknown, Ty::Array(_)) => {
                let t = r.ty.clone();
                (self.coerce(l, &t)?, r)
            }
            (Ty::Unknown, Ty::Unknown) => {
                return Err(WhereError::Type(format!("operator is not unique: unknown {sym} unknown")))
            }
            _ => return Err(unsupported_op(sym, &[&l.ty, &r.ty])),
        };
        only_null_tests(&l.ty)?;
        Ok(Expr::new(ExprKind::ArrayOp { op, left: boxed(l), right: boxed(r) }, Ty::Bool))
    }

    /// `x [NOT] IN (...)` as Postgres transforms it: constant items (two or more) become one
    /// `= ANY(ARRAY[...])` in their common type with `x`; items reading columns (and a lone constant)
    /// become separate comparisons, OR-ed (AND-ed `<>` for NOT IN).
    fn in_list(&self, l: Expr, items: Vec<Expr>, negated: bool) -> Result<Expr, WhereError> {
        let op = if negated { CmpOp::Ne } else { CmpOp::Eq };
        let (vars, nonvars): (Vec<Expr>, Vec<Expr>) = items.into_iter().partition(|e| e.reads_columns());
        let mut parts = Vec::new();
        let mut rest = vars;
        if nonvars.len() > 1 {
            let mut tys: Vec<&Ty> = vec![&l.ty];
            tys.extend(nonvars.iter().map(|e| &e.ty));
            let common = common_type(&tys, "IN").ok().filter(|t| !matches!(t, Ty::Opaque(_) | Ty::Array(_)));
            match common {
                Some(t) => {
                    let elems = nonvars.into_iter().map(|e| self.coerce(e, &t)).collect::<Result<Vec<_>, _>>()?;
                    let arr = Expr::new(ExprKind::ArrayCtor(elems), Ty::Array(Box::new(t)));
                    parts.push(self.any_all(op.sql(), self.dup(&l)?, arr, negated)?);
                }
                None => {
                    let mut all = nonvars;
                    all.extend(rest);
                    rest = all;
                }
            }
        } else {
            let mut all = nonvars;
            all.extend(rest);
            rest = all;
        }
        for item in rest {
            parts.push(self.compare(op, self.dup(&l)?, item)?);
        }
        Ok(match parts.len() {
            0 => return Err(unsupported("unsupported expression: empty IN list")),
            1 => parts.remove(0),
            _ => Expr::new(if negated { ExprKind::And(parts) } else { ExprKind::Or(parts) }, Ty::Bool),
        })
    }

    fn between(&self, kind: AExprKind, x: Expr, lo: Expr, hi: Expr) -> Result<Expr, WhereError> {
        let and = |a: Expr, b: Expr| Expr::new(ExprKind::And(vec![a, b]), Ty::Bool);
        let or = |a: Expr, b: Expr| Expr::new(ExprKind::Or(vec![a, b]), Ty::Bool);
        let c = |op: CmpOp, a: &Expr, b: &Expr| self.compare(op, self.dup(a)?, self.dup(b)?);
        use CmpOp::*;
        Ok(match kind {
            AExprKind::AexprBetween => and(c(Ge, &x, &lo)?, c(Le, &x, &hi)?),
            AExprKind::AexprNotBetween => or(c(Lt, &x, &lo)?, c(Gt, &x, &hi)?),
            AExprKind::AexprBetweenSym => {
                or(and(c(Ge, &x, &lo)?, c(Le, &x, &hi)?), and(c(Ge, &x, &hi)?, c(Le, &x, &lo)?))
            }
            _ => and(or(c(Lt, &x, &lo)?, c(Gt, &x, &hi)?), or(c(Lt, &x, &hi)?, c(Gt, &x, &lo)?)),
        })
    }

    fn array_expr(&self, a: &AArrayExpr) -> Result<Expr, WhereError> {
        if a.elements.iter().any(|e| matches!(e.node, Some(N::AArrayExpr(_)))) {
            return Err(unsupported("unsupported expression: multidimensional arrays are not supported"));
        }
        if a.elements.is_empty() {
            return Err(WhereError::Type("cannot determine type of empty array".into()));
        }
        let elems = self.exprs(&a.elements)?;
        let (elems, t) = self.unify(elems, "ARRAY")?;
        if let Ty::Array(_) = t {
            return Err(unsupported("unsupported expression: multidimensional arrays are not supported"));
        }
        Ok(Expr::new(ExprKind::ArrayCtor(elems), Ty::Array(Box::new(t))))
    }

    fn func_call(&self, f: &FuncCall) -> Result<Expr, WhereError> {
        let name = builtin_name(&f.funcname, "function")?;
        if f.over.is_some() {
            return Err(unsupported(format!("window functions are not supported: \"{name}\"")));
        }
        if f.agg_star || f.agg_distinct || f.agg_filter.is_some() || !f.agg_order.is_empty() || f.agg_within_group {
            return Err(unsupported(format!("aggregate functions are not supported: \"{name}\"")));
        }
        if f.func_variadic {
            return Err(unsupported("VARIADIC function arguments are not supported"));
        }
        let args = self.exprs(&f.args)?;
        let signature = || {
            let tys: Vec<String> = args.iter().map(|a| a.ty.display()).collect();
            WhereError::Type(format!("function {name}({}) does not exist", tys.join(", ")))
        };
        match name.as_str() {
            "now" | "transaction_timestamp" if args.is_empty() => self.now(&format!("{name}()"), Ty::Timestamptz),
            "statement_timestamp" | "clock_timestamp" | "timeofday" => Err(unsupported(format!(
                "function \"{name}\" is not supported: it changes within a transaction (use now())"
            ))),
            "lower" | "upper" | "length" | "char_length" | "character_length" => {
                let [arg] = args.as_slice() else {
                    return Err(signature());
                };
                only_null_tests(&arg.ty)?;
                if !(arg.ty.is_string() || arg.ty == Ty::Unknown) {
                    return Err(signature());
                }
                let arg = arg.clone();
                let (func, arg, ty) = match name.as_str() {
                    "lower" => (Func::Lower, self.coerce(arg, &Ty::Text)?, Ty::Text),
                    "upper" => (Func::Upper, self.coerce(arg, &Ty::Text)?, Ty::Text),
                    _ if arg.ty == Ty::Bpchar => (Func::BpcharLength, arg, Ty::Int4),
                    _ => (Func::Length, self.coerce(arg, &Ty::Text)?, Ty::Int4),
                };
                Ok(Expr::new(ExprKind::Func { func, args: vec![arg] }, ty))
            }
            "concat" => {
                if args.is_empty() {
                    return Err(signature());
                }
                let mut out = Vec::with_capacity(args.len());
                for a in args {
                    only_null_tests(&a.ty)?;
                    out.push(if a.ty == Ty::Unknown { self.coerce(a, &Ty::Text)? } else { a });
                }
                Ok(Expr::new(ExprKind::Func { func: Func::Concat, args: out }, Ty::Text))
            }
            "count" | "sum" | "avg" | "min" | "max" | "array_agg" | "string_agg" | "bool_and" | "bool_or" | "every"
            | "json_agg" | "jsonb_agg" | "json_object_agg" | "jsonb_object_agg" => {
                Err(unsupported(format!("aggregate functions are not supported: \"{name}\"")))
            }
            _ => Err(unsupported(format!("function \"{name}\" is not supported"))),
        }
    }
}

/// Longest `varchar(n)` / `char(n)` Postgres allows.
const MAX_CHAR_LENGTH: i32 = 10_485_760;

fn join_ints(v: &[i32]) -> String {
    v.iter().map(|i| i.to_string()).collect::<Vec<_>>().join(",")
}

/// An unquoted numeric literal: integer (int4, else int8) or numeric, as Postgres types them.
fn numeric_literal(s: &str) -> Result<Expr, WhereError> {
    let digits = s.strip_prefix('-').unwrap_or(s);
    if !digits.is_empty() && digits.bytes().all(|b| b.is_ascii_digit()) {
        if let Ok(v) = s.parse::<i64>() {
            let ty = if i32::try_from(v).is_ok() { Ty::Int4 } else { Ty::Int8 };
            return Ok(Expr::new(ExprKind::Const(Value::Int(v)), ty));
        }
    }
    match Num::parse(s) {
        Ok(n) => Ok(Expr::new(ExprKind::Const(Value::Num(n)), Ty::Numeric)),
        // Beyond the digits we represent: keep the text, so that a float context (`f8 > 1e300`)
        // can still read it; used as numeric it fails when folded.
        Err(EvalError::Unsupported(_)) => {
            Ok(Expr::new(ExprKind::Unknown { text: Some(s.to_string()), param: None }, Ty::Numeric))
        }
        Err(e) => Err(WhereError::InvalidLiteral(e.to_string())),
    }
}

/// `(left operand type, right operand type, result type)` of a binary arithmetic operator.
fn arith_signature(op: ArithOp, l: &Ty, r: &Ty) -> Option<(Ty, Ty, Ty)> {
    use ArithOp::*;
    use Ty::*;
    if l.category() == Category::Numeric && r.category() == Category::Numeric {
        let t = numeric_operator_type(l, r);
        if op == Mod && t.is_float() {
            return None;
        }
        return Some((t.clone(), t.clone(), t));
    }
    Some(match (op, l, r) {
        (Add, Date, Int2 | Int4) => (Date, Int4, Date),
        (Add, Int2 | Int4, Date) => (Int4, Date, Date),
        (Sub, Date, Int2 | Int4) => (Date, Int4, Date),
        (Sub, Date, Date) => (Date, Date, Int4),
        (Add | Sub, Date | Timestamp, Interval) => (Timestamp, Interval, Timestamp),
        (Add, Interval, Date | Timestamp) => (Interval, Timestamp, Timestamp),
        (Add | Sub, Timestamptz, Interval) => (Timestamptz, Interval, Timestamptz),
        (Add, Interval, Timestamptz) => (Interval, Timestamptz, Timestamptz),
        (Sub, Timestamp, Timestamp) | (Sub, Date, Timestamp) | (Sub, Timestamp, Date) => {
            (Timestamp, Timestamp, Interval)
        }
        (Sub, Timestamptz, Timestamptz | Timestamp | Date) | (Sub, Timestamp | Date, Timestamptz) => {
            (Timestamptz, Timestamptz, Interval)
        }
        (Add | Sub, Interval, Interval) => (Interval, Interval, Interval),
        _ => return None,
    })
}

/// Replaces every column-free subexpression by its value, so constants are computed (and their
/// errors reported) once, at compile time.
pub(crate) fn fold(mut e: Expr) -> Result<Expr, WhereError> {
    for c in e.children_mut() {
        let taken = std::mem::replace(c, Expr::new(ExprKind::Const(Value::Null), Ty::Bool));
        *c = fold(taken)?;
    }
    // A subquery's membership changes with its result: never a constant.
    if matches!(e.kind, ExprKind::Column(_) | ExprKind::Const(_) | ExprKind::InSubquery { .. } | ExprKind::Now) {
        return Ok(e);
    }
    // Like Postgres' planner: a strict operation with a NULL constant argument is NULL, and its
    // other arguments are never evaluated (so they cannot raise errors).
    if is_strict(&e.kind) && e.children().iter().any(|c| c.kind == ExprKind::Const(Value::Null)) {
        return Ok(Expr::new(ExprKind::Const(Value::Null), e.ty));
    }
    if e.children().iter().all(|c| matches!(c.kind, ExprKind::Const(_))) {
        let row = Row { values: &[], names: &[], sets: &super::subquery::NoSets, now: None };
        let v = eval(&e, &row).map_err(|err: EvalError| WhereError::Eval(err.to_string()))?;
        return Ok(Expr::new(ExprKind::Const(v), e.ty));
    }
    Ok(e)
}

/// Whether the node yields NULL whenever an argument is NULL (Postgres' strict functions and
/// operators).
fn is_strict(kind: &ExprKind) -> bool {
    use ExprKind::*;
    match kind {
        Cast { .. } | Not(_) | Cmp { .. } | Arith { .. } | Neg(_) | Concat { .. } | Like { .. } | ArrayOp { .. } => {
            true
        }
        Func { func, .. } => *func != super::expr::Func::Concat,
        _ => false,
    }
}

/// Subqueries: `IN (SELECT …)`, `= ANY (SELECT …)`, `<> ALL (SELECT …)` and equality-correlated
/// `EXISTS (SELECT …)`, each compiled against its own table (see [`super::subquery`]).
impl Compiler<'_> {
    fn sub_link(&self, s: &pg_query::protobuf::SubLink) -> Result<Expr, WhereError> {
        use pg_query::protobuf::SubLinkType;
        let Some(catalog) = self.catalog else {
            return Err(unsupported("unsupported expression: subqueries are not supported yet"));
        };
        let Some(N::SelectStmt(sel)) = s.subselect.as_ref().and_then(|n| n.node.as_ref()) else {
            return Err(unsupported("unsupported subquery: it must be a SELECT"));
        };
        let op = strings(&s.oper_name).unwrap_or_default();
        let op = op.last().map(String::as_str).unwrap_or("=");
        match SubLinkType::try_from(s.sub_link_type) {
            Ok(SubLinkType::ExistsSublink) => self.exists(catalog, sel),
            Ok(SubLinkType::AnySublink) if op == "=" => {
                let outer = self.compared_columns(&s.testexpr)?;
                self.in_subquery(catalog, sel, outer)
            }
            // `x <> ALL (S)` is `NOT (x = ANY (S))`, NULLs included.
            Ok(SubLinkType::AllSublink) if op == "<>" => {
                let outer = self.compared_columns(&s.testexpr)?;
                let inside = self.in_subquery(catalog, sel, outer)?;
                Ok(Expr::new(ExprKind::Not(boxed(inside)), Ty::Bool))
            }
            _ => Err(unsupported(
                "unsupported subquery: only IN (SELECT …), = ANY (SELECT …), <> ALL (SELECT …) and EXISTS (SELECT …) are supported",
            )),
        }
    }

    /// The outer side of `IN (subquery)`: a column, or a row of columns `(a, b)`.
    fn compared_columns(&self, test: &Option<Box<Node>>) -> Result<Vec<usize>, WhereError> {
        let not_columns =
            || unsupported("the left side of IN (subquery) must be a column or a row of columns, like (a, b)");
        let refs: Vec<&ColumnRef> = match test.as_deref().and_then(|n| n.node.as_ref()) {
            Some(N::ColumnRef(c)) => vec![c],
            Some(N::RowExpr(r)) => r
                .args
                .iter()
                .map(|a| match &a.node {
                    Some(N::ColumnRef(c)) => Ok(c),
                    _ => Err(not_columns()),
                })
                .collect::<Result<_, _>>()?,
            _ => return Err(not_columns()),
        };
        refs.into_iter()
            .map(|c| match self.column(c)?.kind {
                ExprKind::Column(i) => Ok(i),
                _ => Err(not_columns()),
            })
            .collect()
    }

    /// Whether `parts` (a qualified column reference) names a column of the enclosing query's
    /// table rather than this one's.
    fn is_outer_reference(&self, parts: &[String]) -> bool {
        let Some(outer) = self.outer else { return false };
        let qualifier = match parts {
            [table, _] => table,
            [schema, table, _] if *schema == outer.name.schema => table,
            _ => return false,
        };
        *qualifier == outer.name.name && Some(qualifier.as_str()) != self.alias
    }

    /// Checks that `sel` is a plain `SELECT … FROM one_table [alias] [WHERE …]` and opens its
    /// table: a compiler for its where clause (one level deeper) over the table from `catalog`.
    fn open_subquery(
        &self,
        catalog: &dyn Catalog,
        sel: &pg_query::protobuf::SelectStmt,
    ) -> Result<(std::sync::Arc<TableSchema>, Option<String>), WhereError> {
        if self.depth + 1 > super::limits::MAX_SUBQUERY_DEPTH {
            return Err(too_deep());
        }
        let count = self.budget.get() + 1;
        if count > super::limits::MAX_SUBQUERIES {
            return Err(WhereError::Limit(format!(
                "too many subqueries (the limit is {})",
                super::limits::MAX_SUBQUERIES
            )));
        }
        self.budget.set(count);
        if !super::syntax::is_plain_select(sel) {
            return Err(unsupported(
                "unsupported subquery: only SELECT columns FROM one table [WHERE …] (no DISTINCT, GROUP BY, ORDER BY, LIMIT, WITH or set operations)",
            ));
        }
        let range = match sel.from_clause.as_slice() {
            [one] => match &one.node {
                Some(N::RangeVar(r)) => r,
                _ => {
                    return Err(unsupported(
                        "unsupported subquery: its FROM must name one table (no joins or functions)",
                    ))
                }
            },
            _ => return Err(unsupported("unsupported subquery: its FROM must name exactly one table")),
        };
        let name = range_var_name(range);
        let table = catalog.table(&name).ok_or_else(|| WhereError::UnknownTable(name.to_string()))?;
        let alias = range.alias.as_ref().map(|a| a.aliasname.clone());
        Ok((table, alias))
    }

    /// A compiler for the where clause of a subquery over `table`.
    fn nested<'b>(&'b self, table: &'b TableSchema, alias: Option<&'b str>) -> Compiler<'b> {
        Compiler {
            table,
            params: self.params,
            claims: self.claims,
            copied: Default::default(),
            catalog: self.catalog,
            alias,
            outer: Some(self.table),
            depth: self.depth + 1,
            subqueries: Default::default(),
            budget: self.budget,
        }
    }

    /// `outer IN (SELECT … FROM t WHERE …)`.
    fn in_subquery(
        &self,
        catalog: &dyn Catalog,
        sel: &pg_query::protobuf::SelectStmt,
        outer: Vec<usize>,
    ) -> Result<Expr, WhereError> {
        let (table, alias) = self.open_subquery(catalog, sel)?;
        let inner = self.nested(&table, alias.as_deref());
        let mut columns = Vec::with_capacity(sel.target_list.len());
        for target in &sel.target_list {
            let col = match &target.node {
                Some(N::ResTarget(t)) => match t.val.as_deref().and_then(|v| v.node.as_ref()) {
                    Some(N::ColumnRef(c)) => inner.column(c)?,
                    _ => return Err(unsupported("unsupported subquery: it must select plain columns")),
                },
                _ => return Err(unsupported("unsupported subquery: it must select plain columns")),
            };
            match col.kind {
                ExprKind::Column(i) => columns.push(i),
                _ => return Err(unsupported("unsupported subquery: it must select plain columns")),
            }
        }
        match columns.len().cmp(&outer.len()) {
            std::cmp::Ordering::Greater => return Err(WhereError::Type("subquery has too many columns".into())),
            std::cmp::Ordering::Less => return Err(WhereError::Type("subquery has too few columns".into())),
            std::cmp::Ordering::Equal => {}
        }
        let conjuncts: Vec<&Node> = sel.where_clause.as_deref().into_iter().collect();
        let filter = inner.filter(&conjuncts)?;
        self.add_subquery(inner, &table, columns, outer, filter, false)
    }

    /// `EXISTS (SELECT … FROM t WHERE t.c = outer.k [AND …])`: the top-level equalities between
    /// an inner and an outer column are the compared columns, the rest is the inner filter.
    fn exists(&self, catalog: &dyn Catalog, sel: &pg_query::protobuf::SelectStmt) -> Result<Expr, WhereError> {
        let (table, alias) = self.open_subquery(catalog, sel)?;
        let inner = self.nested(&table, alias.as_deref());
        let mut conjuncts: Vec<&Node> = Vec::new();
        if let Some(w) = sel.where_clause.as_deref() {
            match &w.node {
                Some(N::BoolExpr(b)) if BoolExprType::try_from(b.boolop) == Ok(BoolExprType::AndExpr) => {
                    conjuncts.extend(b.args.iter())
                }
                _ => conjuncts.push(w),
            }
        }
        let (mut outer, mut columns, mut rest) = (Vec::new(), Vec::new(), Vec::new());
        for c in conjuncts {
            match inner.correlation(c)? {
                Some((inner_col, outer_col)) => {
                    columns.push(inner_col);
                    outer.push(outer_col);
                }
                None => rest.push(c),
            }
        }
        if outer.is_empty() {
            return Err(unsupported(
                "EXISTS (subquery) must be correlated by equalities with the outer row: EXISTS (SELECT … FROM t WHERE t.column = outer_table.column AND …)",
            ));
        }
        let filter = inner.filter(&rest)?;
        self.add_subquery(inner, &table, columns, outer, filter, true)
    }

    /// For a conjunct `a = b` of a subquery's where clause between one of its own columns and
    /// one of the enclosing table's: (inner column, outer column).
    fn correlation(&self, node: &Node) -> Result<Option<(usize, usize)>, WhereError> {
        let Some(N::AExpr(a)) = &node.node else { return Ok(None) };
        if AExprKind::try_from(a.kind) != Ok(AExprKind::AexprOp) || strings(&a.name).as_deref() != Some(&["=".into()]) {
            return Ok(None);
        }
        let (Some(N::ColumnRef(l)), Some(N::ColumnRef(r))) =
            (a.lexpr.as_deref().and_then(|n| n.node.as_ref()), a.rexpr.as_deref().and_then(|n| n.node.as_ref()))
        else {
            return Ok(None);
        };
        let parts = |c: &ColumnRef| strings(&c.fields).unwrap_or_default();
        let (inner_ref, outer_ref) = match (self.is_outer_reference(&parts(l)), self.is_outer_reference(&parts(r))) {
            (false, true) => (l, r),
            (true, false) => (r, l),
            _ => return Ok(None),
        };
        let outer_table = self.outer.expect("a correlated reference has an outer table");
        let inner_col = match self.column(inner_ref)?.kind {
            ExprKind::Column(i) => i,
            _ => return Ok(None),
        };
        let outer_parts = parts(outer_ref);
        let outer_name = outer_parts.last().cloned().unwrap_or_default();
        let outer_col =
            outer_table.column_index(&outer_name).ok_or_else(|| WhereError::UnknownColumn(outer_parts.join(".")))?;
        Ok(Some((inner_col, outer_col)))
    }

    /// A subquery's where clause from its conjuncts (none: every row), compiled over its table.
    fn filter(&self, conjuncts: &[&Node]) -> Result<Option<(Expr, Vec<Subquery>)>, WhereError> {
        if conjuncts.is_empty() {
            return Ok(None);
        }
        let mut args = Vec::with_capacity(conjuncts.len());
        for c in conjuncts {
            let e = self.expr(c)?;
            args.push(self.to_bool(e, "WHERE")?);
        }
        let e = if args.len() == 1 { args.pop().expect("one") } else { Expr::new(ExprKind::And(args), Ty::Bool) };
        let e = fold(e)?;
        super::subquery::check_tuples_positive(&e)?;
        Ok(Some((e, self.subqueries.take())))
    }

    /// Records a compiled subquery and returns the node that asks for its membership.
    fn add_subquery(
        &self,
        inner: Compiler<'_>,
        table: &std::sync::Arc<TableSchema>,
        columns: Vec<usize>,
        outer: Vec<usize>,
        filter: Option<(Expr, Vec<Subquery>)>,
        exists: bool,
    ) -> Result<Expr, WhereError> {
        drop(inner);
        for (&o, &i) in outer.iter().zip(&columns) {
            check_subquery_comparable(&Ty::of_column(&self.table.columns[o]), &Ty::of_column(&table.columns[i]))?;
        }
        let filter = match filter {
            Some((e, subs)) => Some(super::WhereClause::over(e, table, subs)?),
            None => None,
        };
        let rule = match self.catalog {
            Some(catalog) => catalog.read_rule(table)?,
            None => None,
        };
        let filter = match (filter, rule) {
            (Some(f), Some(r)) => Some(f.and(r)),
            (f, r) => f.or(r),
        };
        let mut subqueries = self.subqueries.borrow_mut();
        subqueries.push(Subquery { table: table.clone(), columns, filter });
        Ok(Expr::new(ExprKind::InSubquery { columns: outer, sub: subqueries.len() - 1, exists }, Ty::Bool))
    }

    /// The current time as `ty`, where the clause may read it: clauses compiled with a catalog
    /// (write rules, evaluated by Postgres in the write's transaction). Shapes and read rules
    /// cannot follow the clock yet.
    fn now(&self, name: &str, ty: Ty) -> Result<Expr, WhereError> {
        if self.catalog.is_none() {
            return Err(unsupported(format!(
                "{name} is not supported here: shapes and read rules cannot follow the clock yet (write rules can)"
            )));
        }
        Ok(Expr::new(ExprKind::Now, ty))
    }
}
