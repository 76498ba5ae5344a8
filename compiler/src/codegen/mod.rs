//! Code generation: a checked `Plan` and its fused plan → the `main.rs` of a pipeline
//! crate (the crate's `Cargo.toml` comes from `templates/`, see `build`).
//!
//! What is generated, per the design:
//! - one event struct per source, deserialized straight from the bytes (strings borrowed);
//! - one key struct per windowed flow (`()` for a global window);
//! - one accumulator struct per `aggregate` block whose fields are plain accumulators;
//! - one function per fused stage: parse → validate → filter → map → key → assign
//!   windows → accumulate, with no channel or dynamic dispatch between the steps.
//!
//! Architecture invariant: generated code never fails to compile for a checked plan; if
//! it does, that is a streamc bug, reported as an internal error.

pub mod expr;

use crate::ir::{self, FlowEnd, FusedFlow, StageInput};
use crate::plan::{
    AccPlan, AggFn, FlowPlan, Input, KafkaStart, Plan, RowStep, SinkKind, SourceKind, Type,
    WindowKind,
};
use expr::{AccRefs, Binding, Env, ExprGen, owned_ty, read, val_ty};
use proc_macro2::{Ident, TokenStream};
use quote::{format_ident, quote};

#[derive(Debug, thiserror::Error)]
pub enum CodegenError {
    /// A bug in streamc: the plan was checked, generation must not fail.
    #[error("internal error in code generation: {0}")]
    Internal(String),
    /// A form the spec accepts but this version of the runtime cannot run yet.
    #[error("{0}")]
    Unsupported(String),
}

/// Generates the pipeline crate's `src/main.rs`, formatted.
pub fn generate_main(plan: &Plan) -> Result<String, CodegenError> {
    generate(plan, true)
}

/// The same code without `fn main`, to `include!` in a benchmark or test: it defines
/// `Job` (with `Job::new()` for memory state and `Job::open(&StateEnv)`, implementing
/// `streamc_runtime::Pipeline`) and `job_spec()`.
pub fn generate_module(plan: &Plan) -> Result<String, CodegenError> {
    generate(plan, false)
}

/// The stack code generation runs on. Generated code nests as deep as the lazily
/// evaluated parts of an expression (CASE branches, the right side of AND/OR) nest, up to
/// the expression depth limit, and `syn` and `prettyplease` recurse over it with large
/// frames in debug builds: generation gets a thread of its own with this much stack
/// reserved (touched only as deep as it goes), whatever thread the caller runs on.
const GENERATE_STACK: usize = 256 << 20;

fn generate(plan: &Plan, with_main: bool) -> Result<String, CodegenError> {
    unsupported(plan)?;
    std::thread::scope(|scope| {
        let worker = std::thread::Builder::new()
            .name("streamc-codegen".into())
            .stack_size(GENERATE_STACK)
            .spawn_scoped(scope, || generate_here(plan, with_main));
        match worker {
            Ok(handle) => handle
                .join()
                .unwrap_or_else(|_| Err(internal("code generation stopped unexpectedly"))),
            // No thread (a system limit): generate on this one.
            Err(_) => generate_here(plan, with_main),
        }
    })
}

fn generate_here(plan: &Plan, with_main: bool) -> Result<String, CodegenError> {
    let tokens = Gen::new(plan).file(with_main)?;
    let file: syn::File = syn::parse2(tokens)
        .map_err(|e| CodegenError::Internal(format!("generated tokens do not parse: {e}")))?;
    Ok(prettyplease::unparse(&file))
}

/// Features of the runtime a plan needs: heavy dependencies are compiled only for the
/// specs that use them.
pub fn runtime_features(plan: &Plan) -> Vec<&'static str> {
    let mut f = Vec::new();
    if uses_kafka(plan) {
        f.push("kafka");
    }
    if plan
        .sinks
        .iter()
        .any(|s| matches!(s.kind, SinkKind::Redis(_)))
    {
        f.push("redis");
    }
    if plan.serve.is_some() {
        f.push("serve");
    }
    match plan.state {
        crate::plan::StatePlan::Memory => {}
        crate::plan::StatePlan::RocksDb { .. } => f.push("rocksdb"),
    }
    if plan.checkpoint.as_ref().is_some_and(|c| c.uses_s3()) {
        f.push("s3");
    }
    f
}

/// The runtime sinks a windowed flow's results go to: its `to`, and with `serve:` its
/// dashboard sink (after the spec's sinks, one per windowed flow in plan order).
fn window_sinks(plan: &Plan, flow: usize) -> Vec<usize> {
    let mut v = plan.flows[flow].to.clone();
    if plan.serve.is_some() {
        let rank = plan.flows[..flow]
            .iter()
            .filter(|f| f.window.is_some())
            .count();
        v.push(plan.sinks.len() + rank);
    }
    v
}

/// Whether any source, sink or dead-letter output of the plan is Kafka.
pub fn uses_kafka(plan: &Plan) -> bool {
    let kafka_sink = |k: &SinkKind| matches!(k, SinkKind::Kafka { .. });
    plan.sources.iter().any(|s| {
        matches!(s.kind, SourceKind::Kafka { .. })
            || (plan.dead_letter.is_none() && kafka_sink(&s.default_dead_letter))
    }) || plan.sinks.iter().any(|s| kafka_sink(&s.kind))
        || plan.dead_letter.as_ref().is_some_and(kafka_sink)
}

/// Rejects the spec forms whose runtime support comes in a later issue. `streamc check`
/// reports them with their location first (`check/capabilities.rs`); this is the last
/// line for plans that did not pass that gate, so that no setting is ever generated
/// away silently.
pub fn unsupported(_plan: &Plan) -> Result<(), CodegenError> {
    // Every form `streamc check` accepts runs on this build's runtime. A form whose
    // support comes later is listed here and in `check/capabilities.rs`, as
    // `Err(CodegenError::Unsupported(..))` naming it.
    Ok(())
}

fn internal(msg: impl Into<String>) -> CodegenError {
    CodegenError::Internal(msg.into())
}

fn rt() -> TokenStream {
    quote!(::streamc_runtime)
}

fn some() -> TokenStream {
    quote!(::std::option::Option::Some)
}

struct Gen<'p> {
    plan: &'p Plan,
    next_var: usize,
}

impl<'p> Gen<'p> {
    fn new(plan: &'p Plan) -> Self {
        Gen { plan, next_var: 0 }
    }

    fn var(&mut self, name: &str) -> Ident {
        self.next_var += 1;
        let clean: String = name
            .chars()
            .map(|c| {
                if c.is_ascii_alphanumeric() {
                    c.to_ascii_lowercase()
                } else {
                    '_'
                }
            })
            .collect();
        format_ident!("v{}_{}", self.next_var, clean)
    }

    fn file(&mut self, with_main: bool) -> Result<TokenStream, CodegenError> {
        let plan = self.plan;
        let fused = ir::fuse(plan);
        let rt = rt();
        let mut items = Vec::new();
        for (i, s) in plan.sources.iter().enumerate() {
            items.push(self.event_struct(i, &s.schema));
        }
        for (i, f) in plan.flows.iter().enumerate() {
            if f.window.is_some() {
                items.push(self.window_structs(i, f)?);
            } else if !f.to.is_empty() {
                items.push(self.row_struct(i, f));
            }
        }
        let tracking = plan.checkpoint.is_some();
        let rocks = match &plan.state {
            crate::plan::StatePlan::Memory => None,
            crate::plan::StatePlan::RocksDb { path } => Some(path.to_string_lossy().into_owned()),
        };
        let mut job_fields = Vec::new();
        let mut job_init = Vec::new();
        let mut windowed = Vec::new();
        for (i, f) in plan.flows.iter().enumerate() {
            let Some(w) = &f.window else { continue };
            let (op, op_ty) = (op_ident(i), op_type_ident(i));
            let (k, a) = (key_ident(i), acc_ident(i));
            let kind = match w.kind {
                WindowKind::Tumbling { size, offset } => {
                    quote!(#rt::window::WindowKind::Tumbling { size: #size, offset: #offset })
                }
                WindowKind::Sliding { size, slide } => {
                    quote!(#rt::window::WindowKind::Sliding { size: #size, slide: #slide })
                }
                WindowKind::Session { gap } => {
                    quote!(#rt::window::WindowKind::Session { gap: #gap })
                }
            };
            let lateness = w.allowed_lateness;
            let name = &f.name;
            let description = layout_description(f);
            let alignment = if f.aligned {
                let s = ir::root_source(plan, i);
                quote!(#rt::state::Alignment::Partition { source: #s })
            } else {
                quote!(#rt::state::Alignment::Task)
            };
            windowed.push(name.clone());
            let spec = quote!(#rt::window::WindowSpec { kind: #kind, allowed_lateness: #lateness });
            let layout =
                quote!(#rt::state::Layout { name: #name, description: #description.to_string() });
            if rocks.is_some() {
                items.push(quote! {
                    type #op_ty = #rt::state::Groups<#rt::window::WindowOperator<#k, #a, #rt::state::Rocks>>;
                });
                job_init.push(quote! {
                    #op: {
                        let backend = state.rocksdb(#name, #tracking)?;
                        #rt::state::Groups::new(
                            #alignment,
                            #layout,
                            move |group| #rt::window::WindowOperator::with_backend(
                                #spec,
                                backend.for_group(group),
                            ),
                        )
                    },
                });
            } else {
                items.push(quote! {
                    type #op_ty = #rt::state::Groups<#rt::window::WindowOperator<#k, #a>>;
                });
                job_init.push(quote! {
                    #op: #rt::state::Groups::new(
                        #alignment,
                        #layout,
                        |_| #rt::window::WindowOperator::with_backend(
                            #spec,
                            #rt::state::Memory { tracking: #tracking },
                        ),
                    ),
                });
            }
            job_fields.push(quote!(#op: #op_ty,));
        }
        let mut methods = Vec::new();
        let mut fns = Vec::new();
        for st in &fused.stages {
            match st.input {
                StageInput::Source(_) => methods.push(self.stage(st)?),
                StageInput::WindowOutput(_) => fns.push(self.stage(st)?),
            }
        }
        for (i, f) in plan.flows.iter().enumerate() {
            if f.window.is_some() {
                fns.push(self.emit_fn(i, f)?);
                methods.push(advance_fn(plan, i, f.aligned));
            }
        }
        let src_arms = (0..plan.sources.len()).map(|i| {
            let f = format_ident!("stage_source{}", i);
            quote!(#i => self.#f(rec, ctx),)
        });
        let windows_of = |s: usize, aligned: bool| {
            plan.flows
                .iter()
                .enumerate()
                .filter(move |(i, f)| {
                    f.window.is_some() && f.aligned == aligned && ir::root_source(plan, *i) == s
                })
                .map(|(i, _)| i)
        };
        let wm_arms = (0..plan.sources.len()).map(|s| {
            let calls = windows_of(s, false).map(|i| {
                let adv = format_ident!("advance{}", i);
                quote!(self.#adv(wm, ctx);)
            });
            quote!(#s => { #(#calls)* })
        });
        let part_wm_arms = (0..plan.sources.len()).map(|s| {
            let calls = windows_of(s, true).map(|i| {
                let adv = format_ident!("advance{}", i);
                quote!(self.#adv(partition, wm, ctx);)
            });
            quote!(#s => { #(#calls)* })
        });
        let held_arms = (0..plan.sources.len()).map(|s| {
            let parts = plan
                .flows
                .iter()
                .enumerate()
                .filter(|(i, f)| f.window.is_some() && ir::root_source(plan, *i) == s)
                .map(|(i, f)| {
                    let op = op_ident(i);
                    let shift = upstream_extent(plan, i);
                    // An aligned flow holds records of a partition in that partition's
                    // state only.
                    let part = if f.aligned {
                        quote!(::std::option::Option::Some(partition))
                    } else {
                        quote!(::std::option::Option::None)
                    };
                    match shift {
                        Some(d) => quote! {
                            if let ::std::option::Option::Some(t) = self.#op.held_from(#part) {
                                held = held.min(t.saturating_sub(#d));
                            }
                        },
                        // Below a session window, results can stand for any span of input.
                        None => quote! {
                            if self.#op.held_from(#part).is_some() {
                                held = i64::MIN;
                            }
                        },
                    }
                });
            quote!(#s => { let mut held = i64::MAX; #(#parts)* held })
        });
        let state_refs = plan
            .flows
            .iter()
            .enumerate()
            .filter(|(_, f)| f.window.is_some())
            .map(|(i, _)| {
                let op = op_ident(i);
                quote!(&mut self.#op as &mut dyn #rt::state::GroupState)
            });
        let unfired = plan
            .flows
            .iter()
            .enumerate()
            .filter(|(_, f)| f.window.is_some() && matches!(f.input, Input::Source(_)))
            .map(|(i, _)| {
                let op = op_ident(i);
                quote!((#i, self.#op.unfired_events()))
            });
        let job_spec = self.job_spec_fn()?;
        let state_spec = match &rocks {
            None => quote!(#rt::driver::StateSpec::Memory),
            Some(path) => quote!(#rt::driver::StateSpec::RocksDb {
                path: #path,
                operators: ::std::vec![#(#windowed),*],
            }),
        };
        let main = if with_main {
            quote! {
                fn main() -> ::std::process::ExitCode {
                    #rt::driver::main_with(job_spec(), #state_spec, Job::open)
                }
            }
        } else {
            quote!()
        };
        // Memory state: `Job::new()` (benchmarks and fuzzing include the module and
        // call it), `open` wraps it. RocksDB state: only `open`, which takes the opened
        // database.
        let constructors = if rocks.is_some() {
            quote! {
                fn open(
                    state: &#rt::driver::StateEnv,
                ) -> ::std::result::Result<Self, #rt::state::StateError> {
                    ::std::result::Result::Ok(Job { #(#job_init)* })
                }
            }
        } else {
            quote! {
                fn new() -> Self {
                    Job { #(#job_init)* }
                }
                fn open(
                    state: &#rt::driver::StateEnv,
                ) -> ::std::result::Result<Self, #rt::state::StateError> {
                    let _ = state;
                    ::std::result::Result::Ok(Self::new())
                }
            }
        };
        let allow = if with_main {
            quote!(#![allow(unused, clippy::all)])
        } else {
            quote!()
        };
        Ok(quote! {
            #allow

            #(#items)*

            /// The job: the state of every windowed flow, by key group.
            struct Job {
                #(#job_fields)*
            }

            impl Job {
                #constructors
                #(#methods)*
            }

            #(#fns)*

            impl #rt::Pipeline for Job {
                fn on_record(
                    &mut self,
                    src: usize,
                    rec: &#rt::Record<'_>,
                    ctx: &mut #rt::Context,
                ) -> ::std::option::Option<i64> {
                    match src {
                        #(#src_arms)*
                        _ => ::std::option::Option::None,
                    }
                }

                fn on_watermark(&mut self, src: usize, wm: i64, ctx: &mut #rt::Context) {
                    match src {
                        #(#wm_arms)*
                        _ => {}
                    }
                }

                fn on_partition_watermark(
                    &mut self,
                    src: usize,
                    partition: u32,
                    wm: i64,
                    ctx: &mut #rt::Context,
                ) {
                    match src {
                        #(#part_wm_arms)*
                        _ => {}
                    }
                }

                fn held_from(&self, src: usize, partition: u32) -> i64 {
                    match src {
                        #(#held_arms)*
                        _ => i64::MAX,
                    }
                }

                fn state(&mut self) -> ::std::vec::Vec<&mut dyn #rt::state::GroupState> {
                    ::std::vec![#(#state_refs),*]
                }

                fn unfired_events(&self) -> ::std::vec::Vec<(usize, u64)> {
                    ::std::vec![#(#unfired),*]
                }
            }

            #job_spec

            #main
        })
    }

    /// `struct EvN<'a>`: the schema of source N, deserialized from JSON.
    fn event_struct(&self, i: usize, schema: &[crate::plan::Field]) -> TokenStream {
        let name = format_ident!("Ev{}", i);
        let fields = schema.iter().enumerate().map(|(j, f)| {
            let id = format_ident!("f{}", j);
            let json = &f.name;
            let base = match f.ty {
                Type::String => quote!(::std::borrow::Cow<'a, str>),
                t => val_ty(t),
            };
            let ty = if f.nullable {
                quote!(::std::option::Option<#base>)
            } else {
                base
            };
            let mut attrs = vec![quote!(rename = #json)];
            if f.nullable {
                attrs.push(quote!(default));
            }
            if f.ty == Type::String {
                attrs.push(quote!(borrow));
            }
            if f.ty == Type::Timestamp {
                let with = if f.nullable {
                    "::streamc_runtime::de::opt_timestamp"
                } else {
                    "::streamc_runtime::de::timestamp"
                };
                attrs.push(quote!(deserialize_with = #with));
            }
            quote!(#[serde(#(#attrs),*)] #id: #ty,)
        });
        quote! {
            #[derive(::serde::Deserialize)]
            struct #name<'a> {
                #(#fields)*
                #[serde(skip)]
                _borrow: ::std::marker::PhantomData<&'a ()>,
            }
        }
    }

    /// Key, accumulator, accumulator-output, output-row and message-key structs of a
    /// windowed flow.
    fn window_structs(&self, i: usize, f: &FlowPlan) -> Result<TokenStream, CodegenError> {
        let rt = rt();
        let agg = f
            .aggregate
            .as_ref()
            .ok_or_else(|| internal(format!("flow `{}` has a window but no aggregate", f.name)))?;
        let (key, acc, accout, out, msgkey) = (
            key_ident(i),
            acc_ident(i),
            accout_ident(i),
            out_ident(i),
            msgkey_ident(i),
        );
        // Key struct.
        let key_struct = if f.key_by.is_empty() {
            quote!(type #key = ();)
        } else {
            let fields = f.key_by.iter().enumerate().map(|(j, k)| {
                let id = format_ident!("k{}", j);
                let json = &k.name;
                let ty = key_field_ty(k.ty, k.nullable);
                quote!(#[serde(rename = #json)] #id: #ty,)
            });
            quote! {
                #[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, ::serde::Serialize, ::serde::Deserialize)]
                struct #key { #(#fields)* }
            }
        };
        // Accumulator struct.
        let acc_fields = agg.accs.iter().enumerate().map(|(j, a)| {
            let id = format_ident!("a{}", j);
            let ty = acc_field_ty(a);
            quote!(#id: #ty,)
        });
        let merges = agg.accs.iter().enumerate().map(|(j, a)| {
            let id = format_ident!("a{}", j);
            match a.func {
                AggFn::CountAll | AggFn::Count | AggFn::CountIf => {
                    quote!(self.#id = self.#id.wrapping_add(other.#id);)
                }
                AggFn::Sum if a.ty.is_float() => quote! {
                    self.#id = match (self.#id, other.#id) {
                        (::std::option::Option::Some(x), ::std::option::Option::Some(y)) => ::std::option::Option::Some(x + y),
                        (x, y) => x.or(y),
                    };
                },
                AggFn::Sum => quote! {
                    self.#id = match (self.#id, other.#id) {
                        (::std::option::Option::Some(x), ::std::option::Option::Some(y)) => ::std::option::Option::Some(x.wrapping_add(y)),
                        (x, y) => x.or(y),
                    };
                },
                AggFn::Avg => quote!(self.#id.merge(&other.#id);),
                _ => quote!(self.#id.merge(other.#id);),
            }
        });
        let out_fields = agg.accs.iter().enumerate().map(|(j, a)| {
            let id = format_ident!("a{}", j);
            let t = owned_ty(a.ty);
            if nullable_acc(a) {
                quote!(#id: ::std::option::Option<#t>,)
            } else {
                quote!(#id: #t,)
            }
        });
        let out_values = agg.accs.iter().enumerate().map(|(j, a)| {
            let id = format_ident!("a{}", j);
            let v = match a.func {
                AggFn::CountAll | AggFn::Count | AggFn::CountIf | AggFn::Sum => quote!(self.#id),
                AggFn::Quantile => {
                    let q = a.q.unwrap_or(0.5);
                    quote!(self.#id.get(#q))
                }
                AggFn::Min | AggFn::Max | AggFn::First | AggFn::Last => quote!(self.#id.get()),
                _ => quote!(self.#id.get()),
            };
            let v = if a.ty == Type::F32 && matches!(a.func, AggFn::Avg | AggFn::Quantile) {
                quote!(#v.map(|x| x as f32))
            } else {
                v
            };
            quote!(#id: #v,)
        });
        // Output row.
        let key_fields = f.key_by.iter().enumerate().map(|(j, k)| {
            let id = format_ident!("k{}", j);
            let json = &k.name;
            let ty = key_field_ty(k.ty, k.nullable);
            quote!(#[serde(rename = #json)] #id: #ty,)
        });
        let agg_fields = agg.outputs.iter().enumerate().map(|(j, (name, e))| {
            let id = format_ident!("o{}", j);
            let t = e.ty.map(owned_ty).unwrap_or_else(|| quote!(()));
            quote!(#[serde(rename = #name)] #id: ::std::option::Option<#t>,)
        });
        // The values of one event that the accumulators take (`Accumulate::Input`).
        let input = input_ident(i);
        let mut in_fields = Vec::new();
        let mut in_binds = Vec::new();
        let mut updates = Vec::new();
        for (j, a) in agg.accs.iter().enumerate() {
            let (id, x) = (format_ident!("a{}", j), format_ident!("x{}", j));
            let arg_ty = a.arg.as_ref().and_then(|e| e.ty);
            if a.arg.is_some() {
                let t = match arg_ty {
                    Some(Type::String) => quote!(::std::borrow::Cow<'a, str>),
                    Some(t) => val_ty(t),
                    None => quote!(()),
                };
                in_fields.push(quote!(#x: ::std::option::Option<#t>,));
                in_binds.push(if arg_ty == Some(Type::String) {
                    quote!(let #x = &input.#x;)
                } else {
                    quote!(let #x = input.#x;)
                });
            }
            updates.push(update_code(a, &id, &x, arg_ty));
        }
        let mk_fields = f.key_by.iter().enumerate().map(|(j, k)| {
            let id = format_ident!("k{}", j);
            let json = &k.name;
            let ty = key_field_ty(k.ty, k.nullable);
            quote!(#[serde(rename = #json)] #id: &'a #ty,)
        });
        Ok(quote! {
            #key_struct

            #[derive(Default, Clone, ::serde::Serialize, ::serde::Deserialize)]
            struct #acc { #(#acc_fields)* }

            #[derive(Clone, Debug, PartialEq)]
            struct #accout { #(#out_fields)* }

            struct #input<'a> {
                #(#in_fields)*
                _borrow: ::std::marker::PhantomData<&'a ()>,
            }

            impl #rt::window::Accumulate for #acc {
                type Input<'a> = #input<'a>;
                fn add(&mut self, ts: i64, seq: u64, input: &#input<'_>) {
                    let acc = self;
                    #(#in_binds)*
                    #(#updates)*
                }
            }

            impl #rt::window::Aggregator for #acc {
                type Output = #accout;
                fn merge(&mut self, other: Self) {
                    #(#merges)*
                }
                fn output(&self) -> #accout {
                    #accout { #(#out_values)* }
                }
            }

            #[derive(Clone, Debug, ::serde::Serialize)]
            struct #out {
                #(#key_fields)*
                window_start: i64,
                window_end: i64,
                #(#agg_fields)*
                revision: u32,
                #[serde(skip_serializing_if = "::std::ops::Not::not")]
                retracted: bool,
            }

            #[derive(::serde::Serialize)]
            struct #msgkey<'a> {
                #(#mk_fields)*
                window_start: i64,
                window_end: i64,
                #[serde(skip)]
                _borrow: ::std::marker::PhantomData<&'a ()>,
            }
        })
    }

    /// `struct RowN<'a>`: the output row of a stateless flow, borrowing the stage's values.
    fn row_struct(&self, i: usize, f: &FlowPlan) -> TokenStream {
        let name = row_ident(i);
        let from_window = self.reads_window_output(i);
        let fields = f.output.iter().enumerate().map(|(j, fld)| {
            let id = format_ident!("c{}", j);
            let json = &fld.name;
            let ty = match fld.ty {
                Type::String => quote!(::std::borrow::Cow<'a, str>),
                t => val_ty(t),
            };
            // A window result's `retracted` stays "present only when true" downstream.
            let skip = if fld.name == "retracted" && fld.ty == Type::Bool && from_window {
                quote!(, skip_serializing_if = "::streamc_runtime::expr::not_true")
            } else {
                quote!()
            };
            quote!(#[serde(rename = #json #skip)] #id: ::std::option::Option<#ty>,)
        });
        quote! {
            #[derive(::serde::Serialize)]
            struct #name<'a> {
                #(#fields)*
                #[serde(skip)]
                _borrow: ::std::marker::PhantomData<&'a ()>,
            }
        }
    }

    /// Whether a stateless flow's rows come from a window's results (directly or
    /// through other stateless flows).
    fn reads_window_output(&self, flow: usize) -> bool {
        match self.plan.flows[flow].input {
            Input::Source(_) => false,
            Input::Flow(p) => self.plan.flows[p].window.is_some() || self.reads_window_output(p),
        }
    }

    fn stage(&mut self, st: &ir::Stage) -> Result<TokenStream, CodegenError> {
        let rt = rt();
        let s = some();
        match st.input {
            StageInput::Source(i) => {
                let src = &self.plan.sources[i];
                let ev = format_ident!("Ev{}", i);
                let fname = format_ident!("stage_source{}", i);
                let mut env = Env::default();
                let mut binds = Vec::new();
                for (j, f) in src.schema.iter().enumerate() {
                    let var = self.var(&f.name);
                    let fid = format_ident!("f{}", j);
                    let ty = val_ty(f.ty);
                    let value = match (f.ty, f.nullable) {
                        (Type::String, false) => {
                            quote!(#s(::std::borrow::Cow::Borrowed(&*ev.#fid)))
                        }
                        (Type::String, true) => {
                            quote!(ev.#fid.as_deref().map(::std::borrow::Cow::Borrowed))
                        }
                        (_, false) => quote!(#s(ev.#fid)),
                        (_, true) => quote!(ev.#fid),
                    };
                    binds.push(quote!(let #var: ::std::option::Option<#ty> = #value;));
                    env.push(Binding {
                        name: f.name.clone(),
                        var,
                        ty: f.ty,
                        nullable: f.nullable,
                    });
                }
                let et = format_ident!("f{}", src.event_time);
                let max_ahead = opt(src.max_ahead.map(|t| quote!(#t)));
                let payload = quote!(rec.payload);
                let partition = quote!(rec.partition);
                let flows = self.flows(&st.flows, &env, &payload, &partition)?;
                let ops = ops_pattern(&stage_windows(self.plan, st));
                Ok(quote! {
                    /// Fused stage: every flow reading this source, per record.
                    fn #fname(
                        &mut self,
                        rec: &#rt::Record<'_>,
                        ctx: &mut #rt::Context,
                    ) -> ::std::option::Option<i64> {
                        #ops
                        // serde would read an array into the struct by position.
                        if !#rt::de::opens_object(rec.payload) {
                            ctx.dead_letter(#i, rec, #rt::de::NOT_AN_OBJECT);
                            return ::std::option::Option::None;
                        }
                        let ev: #ev<'_> = match ::serde_json::from_slice(rec.payload) {
                            ::std::result::Result::Ok(ev) => ev,
                            ::std::result::Result::Err(e) => {
                                ctx.dead_letter(#i, rec, &e.to_string());
                                return ::std::option::Option::None;
                            }
                        };
                        let ts: i64 = ev.#et as i64;
                        if !ctx.admit_event_time(#i, rec, ts, #max_ahead) {
                            return ::std::option::Option::None;
                        }
                        #(#binds)*
                        #flows
                        #s(ts)
                    }
                })
            }
            StageInput::WindowOutput(p) => {
                let parent = &self.plan.flows[p];
                let out = out_ident(p);
                let fname = format_ident!("stage_window{}", p);
                let agg = parent
                    .aggregate
                    .as_ref()
                    .ok_or_else(|| internal("no aggregate"))?;
                let mut env = Env::default();
                let mut binds = Vec::new();
                let mut push =
                    |g: &mut Self, name: &str, ty: Type, nullable: bool, value: TokenStream| {
                        let var = g.var(name);
                        let vt = val_ty(ty);
                        binds.push(quote!(let #var: ::std::option::Option<#vt> = #value;));
                        env.push(Binding {
                            name: name.to_string(),
                            var,
                            ty,
                            nullable,
                        });
                    };
                for (j, k) in parent.key_by.iter().enumerate() {
                    let id = format_ident!("k{}", j);
                    let value = key_to_value(quote!(row.#id), k.ty, k.nullable);
                    push(self, &k.name, k.ty, k.nullable, value);
                }
                push(
                    self,
                    "window_start",
                    Type::Timestamp,
                    false,
                    quote!(#s(row.window_start)),
                );
                push(
                    self,
                    "window_end",
                    Type::Timestamp,
                    false,
                    quote!(#s(row.window_end)),
                );
                for (j, (name, e)) in agg.outputs.iter().enumerate() {
                    let id = format_ident!("o{}", j);
                    let ty = e.ty.unwrap_or(Type::Bool);
                    let value = if ty == Type::String {
                        quote!(row.#id.as_deref().map(::std::borrow::Cow::Borrowed))
                    } else if e.ty.is_none() {
                        quote!(::std::option::Option::None::<bool>)
                    } else {
                        quote!(row.#id)
                    };
                    push(self, name, ty, e.nullable, value);
                }
                push(self, "revision", Type::U32, false, quote!(#s(row.revision)));
                push(
                    self,
                    "retracted",
                    Type::Bool,
                    false,
                    quote!(#s(row.retracted)),
                );
                if env.bindings.len() != parent.output.len() {
                    return Err(internal(format!(
                        "flow `{}`: output has {} fields, stage binds {}",
                        parent.name,
                        parent.output.len(),
                        env.bindings.len()
                    )));
                }
                let payload = quote!(&::serde_json::to_vec(row).unwrap_or_default());
                // Flows reading a window's results follow the task watermark: key group 0.
                let partition = quote!(0u32);
                let flows = self.flows(&st.flows, &env, &payload, &partition)?;
                let params = ops_params(&downstream_windows(self.plan, p));
                Ok(quote! {
                    /// Fused stage: every flow reading the results of a window.
                    fn #fname(row: &#out, ctx: &mut #rt::Context #(, #params)*) {
                        let ts: i64 = row.window_end.saturating_sub(1);
                        #(#binds)*
                        #flows
                    }
                })
            }
        }
    }

    fn flows(
        &mut self,
        flows: &[FusedFlow],
        env: &Env,
        payload: &TokenStream,
        partition: &TokenStream,
    ) -> Result<TokenStream, CodegenError> {
        let mut out = Vec::new();
        for ff in flows {
            out.push(self.flow(ff, env, payload, partition)?);
        }
        Ok(quote!(#(#out)*))
    }

    /// One flow's steps inline, in a labeled block that a failing filter leaves.
    fn flow(
        &mut self,
        ff: &FusedFlow,
        env: &Env,
        payload: &TokenStream,
        partition: &TokenStream,
    ) -> Result<TokenStream, CodegenError> {
        let rt = rt();
        let plan = self.plan;
        let f = &plan.flows[ff.flow];
        let label =
            syn::Lifetime::new(&format!("'flow{}", ff.flow), proc_macro2::Span::call_site());
        let mut env = env.clone();
        let mut body = Vec::new();
        let doc = format!(" flow `{}`", f.name);
        body.push(quote!(#[doc = #doc] let _ = ();));
        for step in &f.steps {
            match step {
                RowStep::Filter(e) => {
                    let g = ExprGen::new(&env, None);
                    let c = g.expr(e, Some(Type::Bool))?;
                    body.push(quote!(if !#rt::expr::truthy(#c) { break #label; }));
                }
                RowStep::Map(fields) => {
                    let mut new = Vec::new();
                    for (name, e) in fields {
                        let g = ExprGen::new(&env, None);
                        let ty = e.ty.unwrap_or(Type::Bool);
                        let v = g.expr(e, Some(ty))?;
                        let var = self.var(name);
                        let vt = val_ty(ty);
                        body.push(quote!(let #var: ::std::option::Option<#vt> = #v;));
                        new.push(Binding {
                            name: name.clone(),
                            var,
                            ty,
                            nullable: e.nullable,
                        });
                    }
                    for b in new {
                        env.push(b);
                    }
                }
            }
        }
        match &ff.end {
            FlowEnd::Emit { children } => {
                if !f.to.is_empty() {
                    let row = row_ident(ff.flow);
                    let cols = f
                        .output
                        .iter()
                        .enumerate()
                        .map(|(j, fld)| {
                            let id = format_ident!("c{}", j);
                            let b = env.get(&fld.name).ok_or_else(|| {
                                internal(format!("output field `{}` not bound", fld.name))
                            })?;
                            let v = read(b);
                            Ok(quote!(#id: #v,))
                        })
                        .collect::<Result<Vec<_>, CodegenError>>()?;
                    let sinks = &f.to;
                    body.push(quote! {
                        ctx.emit(
                            &[#(#sinks),*],
                            ::std::option::Option::None::<&()>,
                            &#row { #(#cols)* _borrow: ::std::marker::PhantomData },
                        );
                    });
                }
                body.push(self.flows(children, &env, payload, partition)?);
            }
            FlowEnd::Accumulate => {
                body.push(self.accumulate(ff.flow, f, &env, payload, partition)?)
            }
        }
        Ok(quote!(#label: { #(#body)* }))
    }

    fn accumulate(
        &mut self,
        i: usize,
        f: &FlowPlan,
        env: &Env,
        payload: &TokenStream,
        partition: &TokenStream,
    ) -> Result<TokenStream, CodegenError> {
        let rt = rt();
        let agg = f
            .aggregate
            .as_ref()
            .ok_or_else(|| internal("no aggregate"))?;
        let key_ty = key_ident(i);
        let key = if f.key_by.is_empty() {
            quote!(())
        } else {
            let fields = f
                .key_by
                .iter()
                .enumerate()
                .map(|(j, k)| {
                    let id = format_ident!("k{}", j);
                    let b = env
                        .get(&k.name)
                        .ok_or_else(|| internal(format!("key field `{}` not bound", k.name)))?;
                    let v = value_to_key(&b.var, k.ty, k.nullable);
                    Ok(quote!(#id: #v,))
                })
                .collect::<Result<Vec<_>, CodegenError>>()?;
            quote!(#key_ty { #(#fields)* })
        };
        let mut args = Vec::new();
        for (j, a) in agg.accs.iter().enumerate() {
            let x = format_ident!("x{}", j);
            if let Some(e) = &a.arg {
                let g = ExprGen::new(env, None);
                let v = g.expr(e, e.ty)?;
                args.push(quote!(#x: #v,));
            }
        }
        let (op, emit, input) = (op_ident(i), emit_ident(i), input_ident(i));
        let down = ops_args(&downstream_windows(self.plan, i));
        let late = match f.late {
            Some(s) => quote!(::std::option::Option::Some(#s)),
            None => quote!(::std::option::Option::None),
        };
        Ok(quote! {
            let key: #key_ty = #key;
            let input = #input { #(#args)* _borrow: ::std::marker::PhantomData };
            let verdict = #op.process(#partition, ts, (&key, input), &mut |e| #emit(e, ctx #(, #down)*));
            if verdict == #rt::state::Verdict::TooLate {
                ctx.late(#i, #late, #payload);
            }
        })
    }

    /// `emitN`: one window result → output row → sinks → flows reading this flow.
    fn emit_fn(&mut self, i: usize, f: &FlowPlan) -> Result<TokenStream, CodegenError> {
        let rt = rt();
        let agg = f
            .aggregate
            .as_ref()
            .ok_or_else(|| internal("no aggregate"))?;
        let (key_ty, accout, out, msgkey, emit) = (
            key_ident(i),
            accout_ident(i),
            out_ident(i),
            msgkey_ident(i),
            emit_ident(i),
        );
        let mut acc_vars = Vec::new();
        let mut binds = Vec::new();
        for (j, a) in agg.accs.iter().enumerate() {
            let id = format_ident!("a{}", j);
            let var = format_ident!("acc{}", j);
            let vt = val_ty(a.ty);
            let value = match (a.ty, nullable_acc(a)) {
                (Type::String, true) => {
                    quote!(e.out.#id.as_deref().map(::std::borrow::Cow::Borrowed))
                }
                (Type::String, false) => {
                    quote!(::std::option::Option::Some(::std::borrow::Cow::Borrowed(&*e.out.#id)))
                }
                (_, true) => quote!(e.out.#id),
                (_, false) => quote!(::std::option::Option::Some(e.out.#id)),
            };
            binds.push(quote!(let #var: ::std::option::Option<#vt> = #value;));
            acc_vars.push(Binding {
                name: format!("#acc{j}"),
                var,
                ty: a.ty,
                nullable: a.nullable,
            });
        }
        let empty = Env::default();
        let g = ExprGen::new(&empty, Some(AccRefs { vars: &acc_vars }));
        let mut cols = Vec::new();
        for (j, (_, e)) in agg.outputs.iter().enumerate() {
            let id = format_ident!("o{}", j);
            let v = g.expr(e, e.ty)?;
            let v = if e.ty == Some(Type::String) {
                quote!((#v).map(::std::borrow::Cow::into_owned))
            } else {
                v
            };
            cols.push(quote!(#id: #v,));
        }
        let key_moves: Vec<TokenStream> = (0..f.key_by.len())
            .map(|j| {
                let id = format_ident!("k{}", j);
                quote!(#id: key.#id,)
            })
            .collect();
        let mk_refs: Vec<TokenStream> = (0..f.key_by.len())
            .map(|j| {
                let id = format_ident!("k{}", j);
                quote!(#id: &row.#id,)
            })
            .collect();
        let key_bind = if f.key_by.is_empty() {
            quote!(let _ = e.key;)
        } else {
            quote!(let key: #key_ty = e.key;)
        };
        let sinks = window_sinks(self.plan, i);
        let has_readers = ir::readers(self.plan, Input::Flow(i)).next().is_some();
        let down = downstream_windows(self.plan, i);
        let (params, args) = (ops_params(&down), ops_args(&down));
        let downstream = if has_readers {
            let st = format_ident!("stage_window{}", i);
            quote!(#st(&row, ctx #(, #args)*);)
        } else {
            quote!()
        };
        let emit_sinks = if sinks.is_empty() {
            quote!()
        } else {
            quote! {
                let mk = #msgkey {
                    #(#mk_refs)*
                    window_start: row.window_start,
                    window_end: row.window_end,
                    _borrow: ::std::marker::PhantomData,
                };
                ctx.emit(&[#(#sinks),*], ::std::option::Option::Some(&mk), &row);
            }
        };
        Ok(quote! {
            fn #emit(e: #rt::window::Emission<#key_ty, #accout>, ctx: &mut #rt::Context #(, #params)*) {
                #key_bind
                #(#binds)*
                let row = #out {
                    #(#cols)*
                    #(#key_moves)*
                    window_start: e.start,
                    window_end: e.end,
                    revision: e.revision,
                    retracted: e.retracted,
                };
                #emit_sinks
                #downstream
            }
        })
    }

    fn job_spec_fn(&self) -> Result<TokenStream, CodegenError> {
        let rt = rt();
        let plan = self.plan;
        let name = &plan.name;
        let mut dead: Vec<SinkKind> = Vec::new();
        let mut sources = Vec::new();
        for (si, s) in plan.sources.iter().enumerate() {
            let dl = plan
                .dead_letter
                .clone()
                .unwrap_or_else(|| s.default_dead_letter.clone());
            let idx = match dead.iter().position(|d| *d == dl) {
                Some(i) => i,
                None => {
                    dead.push(dl);
                    dead.len() - 1
                }
            };
            let sname = &s.name;
            let kind = match &s.kind {
                SourceKind::File { path } => {
                    let p = path.to_string_lossy().into_owned();
                    quote!(#rt::source::SourceKind::File { path: #p.to_string() })
                }
                SourceKind::Datagen(d) => {
                    let fields = s.schema.iter().map(|f| {
                        let n = &f.name;
                        let t = field_type(f.ty);
                        let nl = f.nullable;
                        let key = d.key_fields.contains(&f.name);
                        quote!(#rt::source::FieldSpec { name: #n, ty: #t, nullable: #nl, key: #key })
                    });
                    let (rate, keys, max_delay, late_fraction, seed, late_delay) = (
                        d.rate,
                        d.keys,
                        d.max_delay,
                        d.late_fraction,
                        d.seed,
                        d.late_delay,
                    );
                    let count = opt(d.count.map(|c| quote!(#c)));
                    let start = opt(d.start.map(|c| quote!(#c)));
                    let et = s.event_time;
                    quote!(#rt::source::SourceKind::Datagen(#rt::source::DatagenSpec {
                        rate: #rate,
                        keys: #keys,
                        max_delay: #max_delay,
                        late_fraction: #late_fraction,
                        seed: #seed,
                        count: #count,
                        start: #start,
                        late_delay: #late_delay,
                        schema: vec![#(#fields),*],
                        event_time: #et,
                    }))
                }
                SourceKind::Kafka {
                    topic,
                    group_id,
                    start,
                    properties,
                    partitioned_by: _, // in `groups` below
                    static_membership,
                } => {
                    let start = match start {
                        KafkaStart::Earliest => quote!(#rt::source::KafkaStart::Earliest),
                        KafkaStart::Latest => quote!(#rt::source::KafkaStart::Latest),
                    };
                    let props = props(properties);
                    quote!(#rt::source::SourceKind::Kafka(#rt::source::KafkaSourceSpec {
                        topic: #topic.to_string(),
                        group_id: #group_id.to_string(),
                        start: #start,
                        properties: #props,
                        static_membership: #static_membership,
                    }))
                }
            };
            let ooo = s.max_out_of_orderness;
            let idle = opt(s.idle_timeout.map(|t| quote!(#t)));
            let partitioned_by: Vec<&String> = match &s.kind {
                SourceKind::Kafka { partitioned_by, .. } => partitioned_by.iter().collect(),
                SourceKind::File { .. } | SourceKind::Datagen(_) => Vec::new(),
            };
            let stateful = |aligned: bool| {
                plan.flows.iter().enumerate().any(|(i, f)| {
                    f.window.is_some() && f.aligned == aligned && ir::root_source(plan, i) == si
                })
            };
            let (parts, task) = (stateful(true), stateful(false));
            sources.push(quote!(#rt::source::SourceSpec {
                name: #sname,
                kind: #kind,
                max_out_of_orderness: #ooo,
                idle_timeout: #idle,
                dead_letter: #idx,
                groups: #rt::source::SourceGroups {
                    partitioned_by: vec![#(#partitioned_by),*],
                    partitions: #parts,
                    task: #task,
                },
            }));
        }
        let sink_spec = |name: &str, k: &SinkKind| -> Result<TokenStream, CodegenError> {
            let kind = match k {
                SinkKind::Stdout => quote!(#rt::sink::SinkKind::Stdout),
                SinkKind::File { path } => {
                    let p = path.to_string_lossy().into_owned();
                    quote!(#rt::sink::SinkKind::File { path: #p.to_string() })
                }
                SinkKind::Kafka { topic, properties } => {
                    let props = props(properties);
                    quote!(#rt::sink::SinkKind::Kafka { topic: #topic.to_string(), properties: #props })
                }
                SinkKind::Redis(r) => self.redis_sink_spec(name, r)?,
            };
            Ok(quote!(#rt::sink::SinkSpec { name: #name, kind: #kind }))
        };
        let mut sinks = plan
            .sinks
            .iter()
            .map(|s| sink_spec(&s.name, &s.kind))
            .collect::<Result<Vec<_>, _>>()?;
        sinks.extend(self.serve_sink_specs());
        let dls = dead
            .iter()
            .map(|k| sink_spec("dead_letter", k))
            .collect::<Result<Vec<_>, _>>()?;
        let flows = plan.flows.iter().map(|f| &f.name);
        let checkpoint = opt(plan.checkpoint.as_ref().map(|c| {
            let (interval, storage) = (c.interval, &c.storage);
            let mode = if c.exactly_once {
                quote!(#rt::checkpoint::Mode::ExactlyOnce)
            } else {
                quote!(#rt::checkpoint::Mode::AtLeastOnce)
            };
            let retain = opt(c.retain.map(|r| quote!(#r)));
            let endpoint = opt(c.s3.endpoint.as_ref().map(|e| quote!(#e.to_string())));
            let region = opt(c.s3.region.as_ref().map(|r| quote!(#r.to_string())));
            quote!(#rt::driver::CheckpointSpec {
                interval_ms: #interval,
                storage: #storage.to_string(),
                s3: #rt::checkpoint::S3Options {
                    endpoint: #endpoint,
                    region: #region,
                },
                mode: #mode,
                retain: #retain,
            })
        }));
        Ok(quote! {
            /// What the driver needs to know of the job: sources, sinks, flow names.
            fn job_spec() -> #rt::driver::JobSpec {
                #rt::driver::JobSpec {
                    name: #name,
                    sources: vec![#(#sources),*],
                    sinks: vec![#(#sinks),*],
                    dead_letters: vec![#(#dls),*],
                    flows: vec![#(#flows),*],
                    checkpoint: #checkpoint,
                }
            }
        })
    }
}

impl Gen<'_> {
    /// With `serve:`, one dashboard sink per windowed flow, named `dashboard:<flow>`
    /// (not a name a spec can give a sink).
    fn serve_sink_specs(&self) -> Vec<TokenStream> {
        let rt = rt();
        let plan = self.plan;
        let Some(serve) = &plan.serve else {
            return Vec::new();
        };
        let listen = opt(serve.listen.as_ref().map(|l| quote!(#l.to_string())));
        let keep = serve.keep.unwrap_or(60);
        let job = &plan.name;
        plan.flows
            .iter()
            .filter_map(|f| {
                let (w, agg) = (f.window.as_ref()?, f.aggregate.as_ref()?);
                let name = format!("dashboard:{}", f.name);
                let flow = &f.name;
                let key_fields = f.key_by.iter().map(|k| &k.name);
                let aggregates = agg.outputs.iter().map(|(n, _)| n);
                let mut window = ir::window_name(&w.kind);
                if w.allowed_lateness > 0 {
                    window.push_str(&format!(", lateness {}", ir::dur(w.allowed_lateness)));
                }
                Some(quote!(#rt::sink::SinkSpec {
                    name: #name,
                    kind: #rt::sink::SinkKind::Serve(::std::boxed::Box::new(#rt::serve::ServeSinkSpec {
                        listen: #listen,
                        keep: #keep,
                        feed: #rt::redis::FeedSpec {
                            job: #job.to_string(),
                            sink: ::std::string::String::new(),
                            flow: #flow.to_string(),
                            key_fields: vec![#(#key_fields.to_string()),*],
                            aggregates: vec![#(#aggregates.to_string()),*],
                            window: #window.to_string(),
                        },
                    })),
                }))
            })
            .collect()
    }

    /// A Redis sink's runtime spec, with the feed it holds: the one windowed flow
    /// writing to it (the checker guarantees there is exactly one).
    fn redis_sink_spec(
        &self,
        name: &str,
        r: &crate::plan::RedisPlan,
    ) -> Result<TokenStream, CodegenError> {
        let rt = rt();
        let plan = self.plan;
        let si = plan
            .sinks
            .iter()
            .position(|s| s.name == name)
            .ok_or_else(|| internal(format!("Redis sink `{name}` is not a sink")))?;
        let flow = plan
            .flows
            .iter()
            .find(|f| f.to.contains(&si))
            .ok_or_else(|| internal(format!("no flow writes Redis sink `{name}`")))?;
        let (window, agg) = match (&flow.window, &flow.aggregate) {
            (Some(w), Some(a)) => (w, a),
            _ => {
                return Err(internal(format!(
                    "Redis sink `{name}` is written by flow `{}`, which has no window",
                    flow.name
                )));
            }
        };
        let job = &plan.name;
        let flow_name = &flow.name;
        let key = &r.key;
        let channel = r
            .channel
            .clone()
            .unwrap_or_else(|| format!("streamc:{job}:{name}"));
        let url = opt(r.url.as_ref().map(|u| quote!(#u.to_string())));
        let stream = match &r.stream {
            Some(s) => quote!(#s.to_string()),
            None => quote!(#rt::redis::DEFAULT_STREAM.to_string()),
        };
        let max_len = match r.stream_max_len {
            Some(n) => quote!(#n),
            None => quote!(#rt::redis::DEFAULT_STREAM_MAX_LEN),
        };
        let keep = match r.keep {
            Some(n) => quote!(#n),
            None => quote!(#rt::redis::DEFAULT_KEEP),
        };
        let ttl = opt(r
            .ttl
            .map(|t| u64::try_from(t).unwrap_or(u64::MAX))
            .map(|t| quote!(#t)));
        let key_fields = flow.key_by.iter().map(|k| &k.name);
        let aggregates = agg.outputs.iter().map(|(n, _)| n);
        let mut window_text = ir::window_name(&window.kind);
        if window.allowed_lateness > 0 {
            window_text.push_str(&format!(", lateness {}", ir::dur(window.allowed_lateness)));
        }
        Ok(
            quote!(#rt::sink::SinkKind::Redis(::std::boxed::Box::new(#rt::redis::RedisSinkSpec {
                url: #url,
                key: #key.to_string(),
                channel: #channel.to_string(),
                stream: #stream,
                stream_max_len: #max_len,
                keep: #keep,
                ttl_ms: #ttl,
                feed: #rt::redis::FeedSpec {
                    job: #job.to_string(),
                    sink: #name.to_string(),
                    flow: #flow_name.to_string(),
                    key_fields: vec![#(#key_fields.to_string()),*],
                    aggregates: vec![#(#aggregates.to_string()),*],
                    window: #window_text.to_string(),
                },
            }))),
        )
    }
}

fn advance_fn(plan: &Plan, i: usize, aligned: bool) -> TokenStream {
    let rt = rt();
    let (op, emit, adv) = (op_ident(i), emit_ident(i), format_ident!("advance{}", i));
    let down = downstream_windows(plan, i);
    let mut mine = vec![i];
    mine.extend(&down);
    let ops = ops_pattern(&mine);
    let args = ops_args(&down);
    // Each emission goes downstream as it is made (no buffer of a whole window's rows):
    // the operator and the windows below it are disjoint fields of the job (the flow
    // graph has no cycles), borrowed side by side.
    if aligned {
        quote! {
            fn #adv(&mut self, partition: u32, wm: i64, ctx: &mut #rt::Context) {
                #ops
                #op.advance_partition(partition, wm, &mut |e| #emit(e, ctx #(, #args)*));
            }
        }
    } else {
        quote! {
            fn #adv(&mut self, wm: i64, ctx: &mut #rt::Context) {
                #ops
                #op.advance_task(wm, &mut |e| #emit(e, ctx #(, #args)*));
            }
        }
    }
}

/// The windowed flows that the results of flow `i` reach, through any flows reading
/// it, in plan order: the window state its emissions are processed into.
fn downstream_windows(plan: &Plan, i: usize) -> Vec<usize> {
    let mut out = Vec::new();
    let mut todo: Vec<usize> = ir::readers(plan, Input::Flow(i)).collect();
    while let Some(f) = todo.pop() {
        if plan.flows[f].window.is_some() && !out.contains(&f) {
            out.push(f);
        }
        todo.extend(ir::readers(plan, Input::Flow(f)));
    }
    out.sort_unstable();
    out.dedup();
    out
}

/// The windowed flows a fused stage touches: those it accumulates into and those their
/// results reach.
fn stage_windows(plan: &Plan, st: &ir::Stage) -> Vec<usize> {
    fn walk(plan: &Plan, ff: &FusedFlow, out: &mut Vec<usize>) {
        match &ff.end {
            FlowEnd::Emit { children } => {
                for c in children {
                    walk(plan, c, out);
                }
            }
            FlowEnd::Accumulate => {
                out.push(ff.flow);
                out.extend(downstream_windows(plan, ff.flow));
            }
        }
    }
    let mut out = Vec::new();
    for ff in &st.flows {
        walk(plan, ff, &mut out);
    }
    out.sort_unstable();
    out.dedup();
    out
}

/// `let Job { window0, window2, .. } = self;` (nothing when `ops` is empty).
fn ops_pattern(ops: &[usize]) -> TokenStream {
    if ops.is_empty() {
        return quote!();
    }
    let names = ops.iter().map(|&i| op_ident(i));
    quote!(let Job { #(#names,)* .. } = self;)
}

/// `window2: &mut Op2, ...` parameters.
fn ops_params(ops: &[usize]) -> Vec<TokenStream> {
    ops.iter()
        .map(|&i| {
            let (op, ty) = (op_ident(i), op_type_ident(i));
            quote!(#op: &mut #ty)
        })
        .collect()
}

/// `window2, ...` arguments.
fn ops_args(ops: &[usize]) -> Vec<TokenStream> {
    ops.iter()
        .map(|&i| {
            let op = op_ident(i);
            quote!(#op)
        })
        .collect()
}

/// What a checkpoint of flow `f`'s window state depends on: the window kind and its
/// parameters, the key's fields and types, the accumulators and their types, and the
/// runtime's encoding version of window state. A spec change that leaves it alone (a
/// filter, a sink, allowed lateness) restores checkpoints; any other refuses them,
/// naming what changed.
fn layout_description(f: &FlowPlan) -> String {
    let window = match f.window.map(|w| w.kind) {
        Some(WindowKind::Tumbling { size, offset }) => {
            format!("tumbling {size} ms offset {offset} ms")
        }
        Some(WindowKind::Sliding { size, slide }) => format!("sliding {size} ms by {slide} ms"),
        Some(WindowKind::Session { gap }) => format!("session gap {gap} ms"),
        None => "none".to_string(),
    };
    let key: Vec<String> = f
        .key_by
        .iter()
        .map(|k| {
            format!(
                "{} {}{}",
                k.name,
                k.ty.name(),
                if k.nullable { "?" } else { "" }
            )
        })
        .collect();
    let accs: Vec<String> = f
        .aggregate
        .iter()
        .flat_map(|a| &a.accs)
        .map(|a| {
            let arg = a
                .arg
                .as_ref()
                .and_then(|e| e.ty)
                .map(Type::name)
                .unwrap_or("-");
            format!("{:?}({arg})->{}", a.func, a.ty.name())
        })
        .collect();
    format!(
        "window state v1; {window}; key ({}); accumulators ({})",
        key.join(", "),
        accs.join(", ")
    )
}

/// How far back in source event time the windows above flow `i` reach: an input
/// row at event time t of flow `i` stands for source records from `t - extent` on. None
/// when a session window is above it (a session can span any length of input).
fn upstream_extent(plan: &Plan, i: usize) -> Option<i64> {
    let mut total = 0i64;
    let mut cur = plan.flows[i].input;
    while let Input::Flow(p) = cur {
        if let Some(w) = &plan.flows[p].window {
            match w.kind {
                WindowKind::Tumbling { size, .. } | WindowKind::Sliding { size, .. } => {
                    total = total.saturating_add(size);
                }
                WindowKind::Session { .. } => return None,
            }
        }
        cur = plan.flows[p].input;
    }
    Some(total)
}

fn props(p: &[(String, String)]) -> TokenStream {
    let items = p
        .iter()
        .map(|(k, v)| quote!((#k.to_string(), #v.to_string())));
    quote!(vec![#(#items),*])
}

fn opt(v: Option<TokenStream>) -> TokenStream {
    match v {
        Some(v) => quote!(::std::option::Option::Some(#v)),
        None => quote!(::std::option::Option::None),
    }
}

fn field_type(t: Type) -> TokenStream {
    let rt = rt();
    match t {
        Type::Bool => quote!(#rt::source::FieldType::Bool),
        Type::I32 => quote!(#rt::source::FieldType::I32),
        Type::I64 => quote!(#rt::source::FieldType::I64),
        Type::U32 => quote!(#rt::source::FieldType::U32),
        Type::U64 => quote!(#rt::source::FieldType::U64),
        Type::F32 => quote!(#rt::source::FieldType::F32),
        Type::F64 => quote!(#rt::source::FieldType::F64),
        Type::String => quote!(#rt::source::FieldType::String),
        Type::Timestamp => quote!(#rt::source::FieldType::Timestamp),
    }
}

/// Whether an accumulator's value can be null.
fn nullable_acc(a: &AccPlan) -> bool {
    !matches!(
        a.func,
        AggFn::CountAll
            | AggFn::Count
            | AggFn::CountIf
            | AggFn::CountDistinct
            | AggFn::ApproxCountDistinct
    )
}

fn acc_field_ty(a: &AccPlan) -> TokenStream {
    let rt = rt();
    let arg = a.arg.as_ref().and_then(|e| e.ty).unwrap_or(a.ty);
    match a.func {
        AggFn::CountAll | AggFn::Count | AggFn::CountIf => quote!(u64),
        AggFn::Sum => {
            let t = val_ty(a.ty);
            quote!(::std::option::Option<#t>)
        }
        AggFn::Avg => quote!(#rt::agg::Avg),
        AggFn::Min => {
            let t = owned_ty(a.ty);
            quote!(#rt::agg::Min<#t>)
        }
        AggFn::Max => {
            let t = owned_ty(a.ty);
            quote!(#rt::agg::Max<#t>)
        }
        AggFn::First => {
            let t = owned_ty(a.ty);
            quote!(#rt::agg::First<#t>)
        }
        AggFn::Last => {
            let t = owned_ty(a.ty);
            quote!(#rt::agg::Last<#t>)
        }
        AggFn::CountDistinct => {
            let t = owned_ty(arg);
            quote!(#rt::agg::CountDistinct<#t>)
        }
        AggFn::ApproxCountDistinct => quote!(#rt::agg::ApproxCountDistinct),
        AggFn::Quantile => quote!(#rt::agg::Quantile),
    }
}

/// The statements that fold one event's argument value `x` into accumulator field `id`.
fn update_code(a: &AccPlan, id: &Ident, x: &Ident, arg_ty: Option<Type>) -> TokenStream {
    let rt = rt();
    let s = some();
    let owned = |v: TokenStream| -> TokenStream {
        if arg_ty == Some(Type::String) {
            quote!(::std::string::String::from(&*#v))
        } else {
            v
        }
    };
    match a.func {
        AggFn::CountAll => quote!(acc.#id += 1;),
        AggFn::Count => quote!(if #x.is_some() { acc.#id += 1; }),
        AggFn::CountIf => quote!(if #rt::expr::truthy(#x) { acc.#id += 1; }),
        AggFn::Sum => {
            let t = val_ty(a.ty);
            if a.ty.is_float() {
                quote!(if let #s(v) = #x {
                    acc.#id = #s(acc.#id.unwrap_or(0.0) + v as #t);
                })
            } else {
                quote!(if let #s(v) = #x {
                    acc.#id = #s(acc.#id.unwrap_or(0).wrapping_add(v as #t));
                })
            }
        }
        AggFn::Avg => quote!(if let #s(v) = #x { acc.#id.add(v as f64); }),
        AggFn::Quantile => quote!(if let #s(v) = #x { acc.#id.add(v as f64); }),
        AggFn::Min | AggFn::Max => {
            let v = owned(quote!(v));
            quote!(if let #s(v) = &#x { let v = v.clone(); acc.#id.add(#v); })
        }
        AggFn::First | AggFn::Last => {
            let v = owned(quote!(v));
            quote!(if let #s(v) = &#x { let v = v.clone(); acc.#id.add(ts, seq, #v); })
        }
        AggFn::CountDistinct | AggFn::ApproxCountDistinct => {
            let v = owned(quote!(v));
            quote!(if let #s(v) = &#x { let v = v.clone(); acc.#id.add(&#v); })
        }
    }
}

fn key_field_ty(t: Type, nullable: bool) -> TokenStream {
    let base = match t {
        Type::F32 | Type::F64 => quote!(::streamc_runtime::key::F64Key),
        other => owned_ty(other),
    };
    if nullable {
        quote!(::std::option::Option<#base>)
    } else {
        base
    }
}

/// A stage value (`Option<V>`) → a key field.
fn value_to_key(var: &Ident, t: Type, nullable: bool) -> TokenStream {
    let rt = rt();
    match (t, nullable) {
        (Type::String, false) => quote!(#var.as_deref().unwrap_or_default().to_owned()),
        (Type::String, true) => quote!(#var.as_deref().map(str::to_owned)),
        (Type::F32 | Type::F64, false) => {
            quote!(#rt::key::F64Key(#var.unwrap_or_default() as f64))
        }
        (Type::F32 | Type::F64, true) => quote!(#var.map(|v| #rt::key::F64Key(v as f64))),
        (_, false) => quote!(#var.unwrap_or_default()),
        (_, true) => quote!(#var),
    }
}

/// A key field of an output row → a stage value (`Option<V>`).
fn key_to_value(field: TokenStream, t: Type, nullable: bool) -> TokenStream {
    let s = some();
    let vt = val_ty(t);
    match (t, nullable) {
        (Type::String, false) => quote!(#s(::std::borrow::Cow::Borrowed(&*#field))),
        (Type::String, true) => quote!(#field.as_deref().map(::std::borrow::Cow::Borrowed)),
        (Type::F32 | Type::F64, false) => quote!(#s(#field.0 as #vt)),
        (Type::F32 | Type::F64, true) => quote!(#field.map(|k| k.0 as #vt)),
        (_, false) => quote!(#s(#field)),
        (_, true) => quote!(#field),
    }
}

fn op_ident(i: usize) -> Ident {
    format_ident!("window{}", i)
}
fn op_type_ident(i: usize) -> Ident {
    format_ident!("Op{}", i)
}
fn input_ident(i: usize) -> Ident {
    format_ident!("In{}", i)
}
fn emit_ident(i: usize) -> Ident {
    format_ident!("emit{}", i)
}
fn key_ident(i: usize) -> Ident {
    format_ident!("Key{}", i)
}
fn acc_ident(i: usize) -> Ident {
    format_ident!("Acc{}", i)
}
fn accout_ident(i: usize) -> Ident {
    format_ident!("AccOut{}", i)
}
fn out_ident(i: usize) -> Ident {
    format_ident!("Out{}", i)
}
fn msgkey_ident(i: usize) -> Ident {
    format_ident!("MsgKey{}", i)
}
fn row_ident(i: usize) -> Ident {
    format_ident!("Row{}", i)
}
