//! Validation: reads the whole configuration, collects every problem with
//! its key path and a hint, and only then refuses or returns the wiring.

use std::collections::{BTreeMap, BTreeSet};

use serde_json::{Map, Value};

use super::introspect::field_names;
use super::load::RawConfig;
use super::model::{AppSettings, BindingSettings, ConsumerSettings, ProducerSettings};
use super::problem::{Problem, Problems, did_you_mean, suggestion};
use super::section::{join, kind, read_section, unknown_key};
use super::wiring::{BinderPlan, FunctionPlan, InputPlan, OutputPlan, Wiring};
use crate::binder::{BindingOptions, ConsumerSpec, ProducerSpec};
use crate::codec::Codec;
use crate::function::FunctionKind;
use crate::policy::RetryPolicy;
use crate::registry::BinderFactory;
use crate::template::KeyTemplate;

const TOP_LEVEL_KEYS: [&str; 3] = ["bindery", "binders", "bindings"];
const MEMORY: &str = "memory";

/// What validation checks the configuration against.
#[derive(Clone, Copy, Debug)]
pub struct Catalog<'a> {
    /// Registered functions and their kinds.
    pub functions: &'a BTreeMap<String, FunctionKind>,
    /// Binder types linked into the program.
    pub factories: &'a [BinderFactory],
    /// Binder instances the program supplies, by name, with their type.
    pub provided_binders: &'a BTreeMap<String, &'static str>,
    /// Binder types the program could be built with, each with what links
    /// it (a feature of the facade), for hints about unlinked types and to
    /// recognise their option sections.
    pub known_types: &'a [(&'static str, &'static str)],
}

impl Catalog<'_> {
    fn factory(&self, binder_type: &str) -> Option<&BinderFactory> {
        self.factories.iter().find(|f| f.binder_type == binder_type)
    }

    fn linked_types(&self) -> BTreeSet<&str> {
        self.factories
            .iter()
            .map(|f| f.binder_type)
            .chain(self.provided_binders.values().copied())
            .collect()
    }
}

/// Validates `raw` against `catalog`. `problems` holds what loading found.
pub fn validate(
    raw: &RawConfig,
    mut problems: Vec<Problem>,
    catalog: Catalog<'_>,
) -> Result<Wiring, Problems> {
    let mut warnings = Vec::new();
    let root = match &raw.tree {
        Value::Object(root) => root.clone(),
        other => {
            problems.push(Problem::new(
                "",
                format!("expected a table at the top, found {}", kind(other)),
            ));
            Map::new()
        }
    };
    for key in root.keys() {
        if !TOP_LEVEL_KEYS.contains(&key.as_str()) {
            problems.push(unknown_key("", key, &TOP_LEVEL_KEYS));
        }
    }
    let app = read_app_settings(root.get("bindery"), &mut problems);

    let binders = check_binders(root.get("binders"), &catalog, &mut problems);
    let default_binder = resolve_default_binder(&app, &binders, &mut problems);
    let functions = check_definition(&app, &catalog, &mut problems);

    let binding_tables = tables(root.get("bindings"), "bindings", &mut problems);
    let mut expected: BTreeMap<String, Direction> = BTreeMap::new();
    for (definition, _, kind) in &functions {
        if kind.has_input() {
            expected.insert(format!("{definition}-in-0"), Direction::Input);
        }
        if kind.has_output() {
            expected.insert(format!("{definition}-out-0"), Direction::Output);
        }
    }
    for name in &app.output_bindings {
        expected.insert(name.clone(), Direction::Output);
    }
    for name in binding_tables.keys() {
        if !expected.contains_key(name) {
            let hint = suggestion(name, expected.keys().map(String::as_str)).unwrap_or_else(|| {
                let known: Vec<&str> = expected.keys().map(String::as_str).collect();
                format!(
                    "the bindings of this app are: {}; list names used with the dynamic sender in bindery.output-bindings",
                    if known.is_empty() { "(none)".to_owned() } else { known.join(", ") }
                )
            });
            problems.push(
                Problem::new(
                    join("bindings", name),
                    format!("binding `{name}` matches no function input or output"),
                )
                .hint(hint),
            );
        }
    }

    let mut context = BindingContext {
        catalog: &catalog,
        binders: &binders,
        default_binder: default_binder.as_deref(),
        problems: &mut problems,
        warnings: &mut warnings,
    };
    let mut plans = Vec::new();
    for (definition, stages, kind) in functions {
        let input = kind.has_input().then(|| {
            let name = format!("{definition}-in-0");
            context.input(&name, binding_tables.get(&name))
        });
        let output = kind.has_output().then(|| {
            let name = format!("{definition}-out-0");
            context.output(&name, binding_tables.get(&name))
        });
        plans.push(FunctionPlan {
            definition,
            stages,
            kind,
            input: input.flatten(),
            output: output.flatten(),
        });
    }
    let extra_outputs = app
        .output_bindings
        .iter()
        .filter_map(|name| context.output(name, binding_tables.get(name)))
        .collect();
    // Check bindings that match nothing too, so typos inside them show up
    // in the same run.
    for (name, table) in &binding_tables {
        if !expected.contains_key(name) {
            if name.contains("-in-") {
                context.input(name, Some(table));
            } else {
                context.output(name, Some(table));
            }
        }
    }

    if !problems.is_empty() {
        for problem in &mut problems {
            if problem.origin.is_empty() {
                problem.origin = raw.origin_of(&problem.path);
            }
        }
        return Err(Problems(problems));
    }
    for warning in &mut warnings {
        warning.origin = raw.origin_of(&warning.path);
    }
    Ok(Wiring {
        app,
        binders: binders.into_values().collect(),
        default_binder,
        functions: plans,
        extra_outputs,
        warnings,
    })
}

/// Reads `[bindery]`, with `[bindery.poller]` checked on its own.
fn read_app_settings(value: Option<&Value>, problems: &mut Vec<Problem>) -> AppSettings {
    let mut table = match value {
        Some(Value::Object(table)) => table.clone(),
        None | Some(Value::Null) => Map::new(),
        Some(other) => {
            problems.push(Problem::new(
                "bindery",
                format!("expected a table, found {}", kind(other)),
            ));
            return AppSettings::default();
        }
    };
    let poller_table = table.remove("poller");
    let poller =
        read_section(poller_table.as_ref(), "bindery.poller", problems).unwrap_or_default();
    let mut app: AppSettings =
        read_section(Some(&Value::Object(table)), "bindery", problems).unwrap_or_default();
    app.poller = poller;
    app
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Direction {
    Input,
    Output,
}

/// The tables under `value` by name; anything else is a problem.
fn tables(
    value: Option<&Value>,
    path: &str,
    problems: &mut Vec<Problem>,
) -> BTreeMap<String, Map<String, Value>> {
    let mut out = BTreeMap::new();
    match value {
        None | Some(Value::Null) => {}
        Some(Value::Object(entries)) => {
            for (name, entry) in entries {
                match entry {
                    Value::Object(table) => {
                        out.insert(name.clone(), table.clone());
                    }
                    other => problems.push(Problem::new(
                        join(path, name),
                        format!("expected a table, found {}", kind(other)),
                    )),
                }
            }
        }
        Some(other) => problems.push(Problem::new(
            path,
            format!("expected a table, found {}", kind(other)),
        )),
    }
    out
}

fn check_binders(
    value: Option<&Value>,
    catalog: &Catalog<'_>,
    problems: &mut Vec<Problem>,
) -> BTreeMap<String, BinderPlan> {
    let mut binders = BTreeMap::new();
    for (name, mut table) in tables(value, "binders", problems) {
        let path = join("binders", &name);
        let provided = catalog.provided_binders.get(&name).copied();
        let binder_type = match table.remove("type") {
            Some(Value::String(t)) => t,
            Some(other) => {
                problems.push(Problem::new(
                    join(&path, "type"),
                    format!("expected a string, found {}", kind(&other)),
                ));
                continue;
            }
            None => match provided {
                Some(t) => t.to_owned(),
                None => {
                    let known: Vec<&str> = catalog.known_types.iter().map(|(t, _)| *t).collect();
                    problems.push(
                        Problem::new(
                            join(&path, "type"),
                            format!("binder `{name}` has no `type`"),
                        )
                        .hint(format!("set type to one of: {}", known.join(", "))),
                    );
                    continue;
                }
            },
        };
        if let Some(provided_type) = provided {
            if provided_type != binder_type {
                problems.push(Problem::new(
                    join(&path, "type"),
                    format!("binder `{name}` is declared as `{binder_type}` but the program supplies a `{provided_type}` binder"),
                ));
            }
        } else {
            match catalog.factory(&binder_type) {
                Some(factory) => {
                    (factory.check_settings)(&Value::Object(table.clone()), &path, problems)
                }
                None => problems.push(unlinked_type(
                    &join(&path, "type"),
                    &name,
                    &binder_type,
                    catalog,
                )),
            }
        }
        binders.insert(
            name.clone(),
            BinderPlan {
                name,
                binder_type,
                settings: Value::Object(table),
                provided: provided.is_some(),
            },
        );
    }
    for (name, binder_type) in catalog.provided_binders {
        binders.entry(name.clone()).or_insert_with(|| BinderPlan {
            name: name.clone(),
            binder_type: (*binder_type).to_owned(),
            settings: Value::Null,
            provided: true,
        });
    }
    if binders.is_empty() {
        // Nothing declared: the embedded memory binder, as Spring's test binder.
        binders.insert(
            MEMORY.to_owned(),
            BinderPlan {
                name: MEMORY.to_owned(),
                binder_type: MEMORY.to_owned(),
                settings: Value::Null,
                provided: false,
            },
        );
        if catalog.factory(MEMORY).is_none() {
            problems.push(
                Problem::new(
                    "binders",
                    "no binder is declared and the memory binder is not linked",
                )
                .hint("declare a binder under [binders.NAME] or enable bindery's `memory` feature"),
            );
        }
    }
    binders
}

fn unlinked_type(path: &str, name: &str, binder_type: &str, catalog: &Catalog<'_>) -> Problem {
    if let Some((_, feature)) = catalog.known_types.iter().find(|(t, _)| *t == binder_type) {
        return Problem::new(
            path,
            format!(
                "binder `{name}` has type `{binder_type}`, which this program was built without"
            ),
        )
        .hint(format!(
            "enable the `{feature}` feature of the bindery crate"
        ));
    }
    let linked = catalog.linked_types();
    let hint =
        suggestion(binder_type, catalog.known_types.iter().map(|(t, _)| *t)).unwrap_or_else(|| {
            format!(
                "linked types: {}",
                linked.iter().copied().collect::<Vec<_>>().join(", ")
            )
        });
    Problem::new(
        path,
        format!("binder `{name}` has unknown type `{binder_type}`"),
    )
    .hint(hint)
}

fn resolve_default_binder(
    app: &AppSettings,
    binders: &BTreeMap<String, BinderPlan>,
    problems: &mut Vec<Problem>,
) -> Option<String> {
    match &app.default_binder {
        Some(name) if binders.contains_key(name) => Some(name.clone()),
        Some(name) => {
            problems.push(undeclared_binder(
                "bindery.default-binder",
                &format!("default-binder names binder `{name}`"),
                name,
                binders,
            ));
            None
        }
        None if binders.len() == 1 => binders.keys().next().cloned(),
        None => None,
    }
}

fn undeclared_binder(
    path: &str,
    subject: &str,
    name: &str,
    binders: &BTreeMap<String, BinderPlan>,
) -> Problem {
    let declared: Vec<&str> = binders.keys().map(String::as_str).collect();
    let mut hint = format!("declared: {}", declared.join(", "));
    if let Some(s) = suggestion(name, declared.iter().copied()) {
        hint = format!("{s} ({hint})");
    }
    Problem::new(path, format!("{subject}, which is not declared")).hint(hint)
}

/// Parses `definition` into (definition, stages, kind) per `;` part.
fn check_definition(
    app: &AppSettings,
    catalog: &Catalog<'_>,
    problems: &mut Vec<Problem>,
) -> Vec<(String, Vec<String>, FunctionKind)> {
    let registered: Vec<&str> = catalog.functions.keys().map(String::as_str).collect();
    let listing = || {
        if registered.is_empty() {
            "no functions are registered".to_owned()
        } else {
            format!("registered: {}", registered.join(", "))
        }
    };
    let definition = match &app.definition {
        Some(definition) => definition.clone(),
        None => match registered.as_slice() {
            [] => return Vec::new(),
            [only] => (*only).to_owned(),
            several => {
                problems.push(
                    Problem::new(
                        "bindery.definition",
                        format!(
                            "{} functions are registered and no definition chooses among them",
                            several.len()
                        ),
                    )
                    .hint(format!(
                        "set bindery.definition, e.g. \"{}\"; {}",
                        several.join(";"),
                        listing()
                    )),
                );
                return Vec::new();
            }
        },
    };
    let mut out = Vec::new();
    for part in definition.split(';').map(str::trim) {
        if part.is_empty() {
            problems.push(Problem::new(
                "bindery.definition",
                format!("definition `{definition}` has an empty part"),
            ));
            continue;
        }
        let stages: Vec<String> = part.split('|').map(|s| s.trim().to_owned()).collect();
        let mut kinds = Vec::new();
        for stage in &stages {
            match catalog.functions.get(stage) {
                Some(kind) => kinds.push(*kind),
                None => {
                    let mut hint = listing();
                    if let Some(s) = suggestion(stage, registered.iter().copied()) {
                        hint = format!("{s} ({hint})");
                    }
                    let what = if stage.is_empty() {
                        format!("definition `{part}` has an empty function name")
                    } else {
                        format!("definition names function `{stage}`, which is not registered")
                    };
                    problems.push(Problem::new("bindery.definition", what).hint(hint));
                }
            }
        }
        if kinds.len() != stages.len() {
            continue;
        }
        let last = kinds.len() - 1;
        for (i, kind) in kinds.iter().enumerate() {
            let misplaced = match kind {
                FunctionKind::Source => i != 0,
                FunctionKind::Sink => i != last,
                FunctionKind::Processor => false,
            };
            if misplaced {
                problems.push(Problem::new(
                    "bindery.definition",
                    format!(
                        "in `{part}`, `{}` is a {kind} and can only come {}",
                        stages[i],
                        if *kind == FunctionKind::Source {
                            "first"
                        } else {
                            "last"
                        }
                    ),
                ));
            }
        }
        let stages_joined = stages.join("|");
        let kind = match (kinds[0].has_input(), kinds[last].has_output()) {
            (false, _) => FunctionKind::Source,
            (true, false) => FunctionKind::Sink,
            (true, true) => FunctionKind::Processor,
        };
        out.push((stages_joined, stages, kind));
    }
    out
}

struct BindingContext<'a, 'c> {
    catalog: &'a Catalog<'c>,
    binders: &'a BTreeMap<String, BinderPlan>,
    default_binder: Option<&'a str>,
    problems: &'a mut Vec<Problem>,
    warnings: &'a mut Vec<Problem>,
}

/// Takes out of a binding's table the keys that are not binding keys but
/// (nearly) name a `consumer` or `producer` setting, and reports each with
/// the path where it belongs: Spring users often write `max-attempts`
/// beside `destination`.
fn report_misplaced_keys(table: &mut Map<String, Value>, path: &str, problems: &mut Vec<Problem>) {
    let binding_keys = field_names::<BindingSettings>();
    let nested = [
        ("consumer", field_names::<ConsumerSettings>()),
        ("producer", field_names::<ProducerSettings>()),
    ];
    let exact = |key: &str| {
        nested
            .iter()
            .find_map(|(section, fields)| fields.contains(&key).then(|| format!("{section}.{key}")))
    };
    // A near miss of a binding key is a typo of that key, not misplaced.
    let near = |key: &str| {
        if did_you_mean(key, binding_keys.iter().copied()).is_some() {
            return None;
        }
        nested.iter().find_map(|(section, fields)| {
            did_you_mean(key, fields.iter().copied()).map(|field| format!("{section}.{field}"))
        })
    };
    let misplaced: Vec<(String, String)> = table
        .keys()
        .filter(|key| !binding_keys.contains(&key.as_str()))
        .filter_map(|key| Some((key.clone(), exact(key).or_else(|| near(key))?)))
        .collect();
    for (key, belongs) in misplaced {
        table.remove(&key);
        problems.push(
            Problem::new(join(path, &key), format!("unknown key `{key}` here"))
                .hint(format!("did you mean `{}`?", join(path, &belongs))),
        );
    }
}

/// The parts of one binding common to inputs and outputs.
struct Common {
    settings: BindingSettings,
    binder: String,
    binder_type: String,
    binder_settings: Value,
    destination: String,
    options: BindingOptions,
}

impl BindingContext<'_, '_> {
    /// Reads the common parts; `None` after reporting problems.
    fn common(
        &mut self,
        name: &str,
        table: Option<&Map<String, Value>>,
        direction: Direction,
    ) -> Option<Common> {
        let path = join("bindings", name);
        let mut table = table.cloned().unwrap_or_default();
        // Sections named after a binder type hold that binder's options.
        let mut sections = BTreeMap::new();
        let type_names: BTreeSet<&str> = self
            .catalog
            .known_types
            .iter()
            .map(|(t, _)| *t)
            .chain(self.catalog.linked_types())
            .collect();
        for type_name in &type_names {
            if let Some(section) = table.remove(*type_name) {
                sections.insert((*type_name).to_owned(), section);
            }
        }
        // Nested tables are read on their own so unknown keys in them are
        // reported too.
        let consumer_table = table.remove("consumer");
        let producer_table = table.remove("producer");
        let consumer = read_section(
            consumer_table.as_ref(),
            &join(&path, "consumer"),
            self.problems,
        );
        let producer = read_section(
            producer_table.as_ref(),
            &join(&path, "producer"),
            self.problems,
        );
        report_misplaced_keys(&mut table, &path, self.problems);
        let settings: Option<BindingSettings> =
            read_section(Some(&Value::Object(table.clone())), &path, self.problems);
        let (Some(mut settings), Some(consumer), Some(producer)) = (settings, consumer, producer)
        else {
            return None;
        };
        settings.consumer = consumer;
        settings.producer = producer;
        let present = |key: &str| match key {
            "consumer" => consumer_table.is_some(),
            _ => producer_table.is_some(),
        };
        let (unused, unused_key) = match direction {
            Direction::Input => ("producer", "an input"),
            Direction::Output => ("consumer", "an output"),
        };
        if present(unused) {
            self.warnings.push(Problem::new(
                join(&path, unused),
                format!("{unused} settings have no effect on {unused_key} binding"),
            ));
        }
        if let Err(e) = Codec::for_content_type(&settings.content_type) {
            self.problems
                .push(Problem::new(join(&path, "content-type"), e.to_string()));
        }
        let binder = match settings.binder.as_deref().or(self.default_binder) {
            Some(binder) => binder.to_owned(),
            None => {
                let declared: Vec<&str> = self.binders.keys().map(String::as_str).collect();
                self.problems.push(
                    Problem::new(
                        join(&path, "binder"),
                        format!("binding `{name}` names no binder and there is no default"),
                    )
                    .hint(format!(
                        "set bindery.default-binder or bindings.{name}.binder to one of: {}",
                        declared.join(", ")
                    )),
                );
                return None;
            }
        };
        let Some(plan) = self.binders.get(&binder) else {
            self.problems.push(undeclared_binder(
                &join(&path, "binder"),
                &format!("binding `{name}` names binder `{binder}`"),
                &binder,
                self.binders,
            ));
            return None;
        };
        let mut options = BindingOptions::none();
        for (type_name, section) in sections {
            let section_path = join(&path, &type_name);
            let mine = type_name == plan.binder_type;
            match self.catalog.factory(&type_name) {
                Some(factory) => {
                    let parsed = (factory.check_binding_options)(&section, &section_path, self.problems);
                    if let (true, Some(parsed)) = (mine, parsed) {
                        options = parsed;
                    }
                }
                // A binder the program supplies, of a type without a
                // factory, reads its section as it is.
                None if mine => options = BindingOptions::new(section),
                None => self.warnings.push(Problem::new(
                    section_path,
                    format!("options for binder type `{type_name}` are not checked: this program was built without it"),
                )),
            }
        }
        let destination = settings
            .destination
            .clone()
            .unwrap_or_else(|| name.to_owned());
        if destination.is_empty() {
            self.problems.push(Problem::new(
                join(&path, "destination"),
                "destination is empty",
            ));
        }
        Some(Common {
            settings,
            binder,
            binder_type: plan.binder_type.clone(),
            binder_settings: plan.settings.clone(),
            destination,
            options,
        })
    }

    fn input(&mut self, name: &str, table: Option<&Map<String, Value>>) -> Option<InputPlan> {
        let path = join("bindings", name);
        let common = self.common(name, table, Direction::Input)?;
        let consumer = &common.settings.consumer;
        let consumer_path = join(&path, "consumer");
        let retry = match RetryPolicy::from_settings(consumer) {
            Ok(retry) => Some(retry),
            Err(e) => {
                self.problems
                    .push(Problem::new(consumer_path.clone(), e.to_string()));
                None
            }
        };
        if consumer.concurrency == 0 {
            self.problems.push(Problem::new(
                join(&consumer_path, "concurrency"),
                "concurrency must be at least 1",
            ));
        }
        if consumer.prefetch == 0 {
            self.problems.push(Problem::new(
                join(&consumer_path, "prefetch"),
                "prefetch must be at least 1",
            ));
        }
        if consumer.concurrency > consumer.prefetch && consumer.prefetch > 0 {
            self.warnings.push(Problem::new(
                join(&consumer_path, "concurrency"),
                format!("concurrency {} exceeds prefetch {}: at most {} messages can be in process at once", consumer.concurrency, consumer.prefetch, consumer.prefetch),
            ));
        }
        if consumer.invocation_timeout == Some(std::time::Duration::ZERO) {
            self.problems.push(
                Problem::new(
                    join(&consumer_path, "invocation-timeout"),
                    "invocation-timeout must be above zero",
                )
                .hint("leave it out for no limit"),
            );
        }
        if let Some(retry) = &retry {
            self.warn_if_impatient(&common, retry, &consumer_path);
        }
        if consumer.binding_routing_keys.is_empty() {
            self.problems.push(
                Problem::new(
                    join(&consumer_path, "binding-routing-keys"),
                    "no routing-key pattern: nothing would be delivered",
                )
                .hint("use [\"#\"] for every message"),
            );
        }
        let group = common.settings.group.clone();
        let dead_letter = match (consumer.dead_letter, &group) {
            (Some(true), None) => {
                self.problems.push(
                    Problem::new(
                        join(&consumer_path, "dead-letter"),
                        format!("binding `{name}` has dead-letter on but no group"),
                    )
                    .hint("a dead-letter destination belongs to a group; set a group"),
                );
                false
            }
            (Some(on), _) => on,
            (None, group) => group.is_some(),
        };
        let mut spec = ConsumerSpec::new(name, common.destination)
            .prefetch(consumer.prefetch)
            .concurrency(consumer.concurrency)
            .routing_keys(&consumer.binding_routing_keys)
            .dead_letter(dead_letter)
            .options(common.options);
        spec.group = group;
        Some(InputPlan {
            binding: name.to_owned(),
            binder: common.binder,
            content_type: common.settings.content_type.clone(),
            consumer: spec,
            retry: retry?,
            invocation_timeout: consumer.invocation_timeout,
        })
    }

    /// Warns when a message's worst-case in-process back-off outlasts how
    /// long the broker lets a delivery stay unacknowledged: the broker would
    /// take it back and its attempts would start again instead of ending in
    /// the dead-letter destination (audit A14).
    fn warn_if_impatient(&mut self, common: &Common, retry: &RetryPolicy, consumer_path: &str) {
        let Some(factory) = self.catalog.factory(&common.binder_type) else {
            return;
        };
        let Some(patience) = (factory.delivery_patience)(&common.binder_settings, &common.options)
        else {
            return;
        };
        let worst: std::time::Duration = (1..retry.max_attempts())
            .map(|attempt| retry.backoff().delay(attempt))
            .sum();
        if worst > patience.limit {
            self.warnings.push(
                Problem::new(
                    consumer_path.to_owned(),
                    format!(
                        "a failing message may wait {} in back-off across {} attempts, longer than {} ({}): the broker would redeliver it and its attempts would start again",
                        humantime::format_duration(worst),
                        retry.max_attempts(),
                        patience.source,
                        humantime::format_duration(patience.limit)
                    ),
                )
                .hint("lower max-attempts or back-off-max-interval, or raise the broker's limit"),
            );
        }
    }

    fn output(&mut self, name: &str, table: Option<&Map<String, Value>>) -> Option<OutputPlan> {
        let path = join("bindings", name);
        let common = self.common(name, table, Direction::Output)?;
        let producer = &common.settings.producer;
        let producer_path = join(&path, "producer");
        let mut template = |key: &str, value: &Option<String>| {
            value
                .as_deref()
                .and_then(|text| match KeyTemplate::parse(text) {
                    Ok(template) => Some(template),
                    Err(e) => {
                        self.problems
                            .push(Problem::new(join(&producer_path, key), e.to_string()));
                        None
                    }
                })
        };
        let routing_key = template("routing-key", &producer.routing_key);
        let partition_key = template("partition-key", &producer.partition_key);
        if producer.partition_count == Some(0) {
            self.problems.push(Problem::new(
                join(&producer_path, "partition-count"),
                "partition-count must be at least 1",
            ));
        }
        let partitioned = self
            .catalog
            .factory(&common.binder_type)
            .map(|factory| factory.capabilities.partitions);
        if producer.partition_count.is_some() && partitioned == Some(false) {
            self.warnings.push(Problem::new(
                join(&producer_path, "partition-count"),
                format!(
                    "partition-count sizes partitioned destinations; binder `{}` (type `{}`) has no partitions and ignores it",
                    common.binder, common.binder_type
                ),
            ));
        }
        let spec = ProducerSpec::new(name, common.destination)
            .required_groups(producer.required_groups.iter().cloned())
            .partition_count(producer.partition_count.unwrap_or(1))
            .options(common.options);
        Some(OutputPlan {
            binding: name.to_owned(),
            binder: common.binder,
            content_type: common.settings.content_type.clone(),
            producer: spec,
            routing_key,
            partition_key,
        })
    }
}
