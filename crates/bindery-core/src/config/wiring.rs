//! The validated plan of an application: which function is bound where,
//! through which binder. `--check` prints it.

use std::fmt;

use serde_json::Value;

use super::model::AppSettings;
use super::problem::Problem;
use crate::binder::{ConsumerSpec, ProducerSpec};
use crate::function::FunctionKind;
use crate::policy::RetryPolicy;
use crate::template::KeyTemplate;

/// A validated configuration, ready to start.
#[derive(Clone, Debug)]
#[non_exhaustive]
pub struct Wiring {
    /// `[bindery]`.
    pub app: AppSettings,
    /// Binders to create.
    pub binders: Vec<BinderPlan>,
    /// The binder of bindings that name none.
    pub default_binder: Option<String>,
    /// Functions to run, one per `;`-separated definition.
    pub functions: Vec<FunctionPlan>,
    /// Output bindings of the dynamic sender (`bindery.output-bindings`).
    pub extra_outputs: Vec<OutputPlan>,
    /// Things that work but are likely mistakes.
    pub warnings: Vec<Problem>,
}

/// A binder to create. Its `Debug` shows the names of its settings, never
/// their values, which may hold secrets after `${VAR}` substitution (audit
/// A18).
#[derive(Clone)]
#[non_exhaustive]
pub struct BinderPlan {
    /// Its name in `[binders.NAME]` (or `memory` for the built-in one).
    pub name: String,
    /// Its `type`.
    pub binder_type: String,
    /// Its settings without `type`.
    pub settings: Value,
    /// Whether the program supplied the instance itself.
    pub provided: bool,
}

/// One function (or composition) and its bindings.
#[derive(Clone, Debug)]
#[non_exhaustive]
pub struct FunctionPlan {
    /// The definition, such as `enrich|audit`; binding names start with it.
    pub definition: String,
    /// The composed function names, in order.
    pub stages: Vec<String>,
    /// Source, processor or sink.
    pub kind: FunctionKind,
    /// The input binding, unless a source.
    pub input: Option<InputPlan>,
    /// The output binding, unless a sink.
    pub output: Option<OutputPlan>,
}

/// An input binding.
#[derive(Clone, Debug)]
#[non_exhaustive]
pub struct InputPlan {
    /// The binding's name, `<definition>-in-0`.
    pub binding: String,
    /// The binder's name.
    pub binder: String,
    /// The binding's content type.
    pub content_type: String,
    /// What to ask of the binder.
    pub consumer: ConsumerSpec,
    /// Attempts and back-off.
    pub retry: RetryPolicy,
    /// Longest one invocation may run; `None` is no limit.
    pub invocation_timeout: Option<std::time::Duration>,
}

/// An output binding.
#[derive(Clone, Debug)]
#[non_exhaustive]
pub struct OutputPlan {
    /// The binding's name, `<definition>-out-0`.
    pub binding: String,
    /// The binder's name.
    pub binder: String,
    /// The binding's content type.
    pub content_type: String,
    /// What to ask of the binder.
    pub producer: ProducerSpec,
    /// Routing key template.
    pub routing_key: Option<KeyTemplate>,
    /// Key template.
    pub partition_key: Option<KeyTemplate>,
}

impl fmt::Debug for BinderPlan {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let keys: Vec<&str> = self
            .settings
            .as_object()
            .map(|settings| settings.keys().map(String::as_str).collect())
            .unwrap_or_default();
        f.debug_struct("BinderPlan")
            .field("name", &self.name)
            .field("binder_type", &self.binder_type)
            .field("settings", &keys)
            .field("provided", &self.provided)
            .finish()
    }
}

impl Wiring {
    /// The binder plan called `name`.
    pub fn binder(&self, name: &str) -> Option<&BinderPlan> {
        self.binders.iter().find(|b| b.name == name)
    }

    /// The input binding called `name`.
    pub fn input(&self, name: &str) -> Option<&InputPlan> {
        self.functions
            .iter()
            .filter_map(|f| f.input.as_ref())
            .find(|i| i.binding == name)
    }

    /// The output plan the dynamic sender uses for `name`: a configured
    /// output binding of that name, else destination `name` on the default
    /// binder with JSON.
    pub fn dynamic_output(&self, name: &str) -> Option<OutputPlan> {
        let configured = self
            .extra_outputs
            .iter()
            .chain(self.functions.iter().filter_map(|f| f.output.as_ref()))
            .find(|o| o.binding == name);
        if let Some(plan) = configured {
            return Some(plan.clone());
        }
        Some(OutputPlan {
            binding: name.to_owned(),
            binder: self.default_binder.clone()?,
            content_type: crate::codec::DEFAULT_CONTENT_TYPE.to_owned(),
            producer: ProducerSpec::new(name, name),
            routing_key: None,
            partition_key: None,
        })
    }
}

impl fmt::Display for Wiring {
    /// The wiring as `--check` prints it: function → binding → binder.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let binder_type = |name: &str| {
            self.binder(name)
                .map(|b| b.binder_type.as_str())
                .unwrap_or("?")
        };
        writeln!(f, "binders:")?;
        for binder in &self.binders {
            let default = if self.default_binder.as_deref() == Some(&binder.name) {
                " (default)"
            } else {
                ""
            };
            writeln!(f, "  {} type={}{default}", binder.name, binder.binder_type)?;
        }
        writeln!(f, "functions:")?;
        for function in &self.functions {
            writeln!(f, "  {} ({})", function.definition, function.kind)?;
            if let Some(input) = &function.input {
                let spec = &input.consumer;
                writeln!(
                    f,
                    "    in  {} -> binder {} ({}) destination={} group={} max-attempts={} dead-letter={} concurrency={} prefetch={}",
                    input.binding,
                    input.binder,
                    binder_type(&input.binder),
                    spec.destination,
                    spec.group.as_deref().unwrap_or("(anonymous)"),
                    input.retry.max_attempts(),
                    if spec.dead_letter { "on" } else { "off" },
                    spec.concurrency,
                    spec.prefetch,
                )?;
            }
            if let Some(output) = &function.output {
                write_output(f, output, binder_type(&output.binder))?;
            }
        }
        for output in &self.extra_outputs {
            write_output(f, output, binder_type(&output.binder))?;
        }
        for warning in &self.warnings {
            writeln!(f, "warning: {warning}")?;
        }
        Ok(())
    }
}

fn write_output(f: &mut fmt::Formatter<'_>, output: &OutputPlan, binder_type: &str) -> fmt::Result {
    write!(
        f,
        "    out {} -> binder {} ({}) destination={} content-type={}",
        output.binding,
        output.binder,
        binder_type,
        output.producer.destination,
        output.content_type
    )?;
    if let Some(key) = &output.routing_key {
        write!(f, " routing-key={}", key.as_str())?;
    }
    if let Some(key) = &output.partition_key {
        write!(f, " partition-key={}", key.as_str())?;
    }
    writeln!(f)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a18_a_binder_plan_never_shows_its_setting_values() {
        let plan = BinderPlan {
            name: "broker".into(),
            binder_type: "queue".into(),
            settings: serde_json::json!({
                "uri": "amqp://guest:s3cr3t@127.0.0.1:5672/%2f",
                "properties": { "sasl.password": "hunter2" },
            }),
            provided: false,
        };
        let shown = format!("{plan:?}");
        assert!(
            !shown.contains("s3cr3t") && !shown.contains("hunter2"),
            "{shown}"
        );
        assert!(shown.contains("uri"), "{shown}");
    }
}
