//! The API's OpenAPI 3.1 document, generated from the handlers' annotations and the shapes
//! below (what the handlers answer). Served at `/api/v1/openapi.json`; `engine/openapi.json`
//! is the copy in the repository, and a test fails when the two differ.

use utoipa::openapi::security::{HttpAuthScheme, HttpBuilder, SecurityScheme};
use utoipa::{Modify, OpenApi, ToSchema};

/// Every error: a stable code and the message the CLI would print.
#[derive(ToSchema)]
pub struct ErrorBody {
    pub error: ErrorDetail,
}

#[derive(ToSchema)]
pub struct ErrorDetail {
    /// `unauthorized`, `forbidden`, `not_found`, `bad_request`, `conflict`, `invalid`,
    /// `too_many_attempts`, `timeout`, `internal`.
    pub code: String,
    pub message: String,
}

#[derive(ToSchema)]
pub struct Health {
    pub status: String,
    pub version: String,
}

#[derive(ToSchema)]
pub struct Ready {
    pub ready: bool,
    /// What is not ready, when something is not.
    pub problems: Vec<String>,
}

#[derive(ToSchema)]
pub struct WhoAmI {
    pub name: String,
    /// viewer, responder, approver or admin.
    pub role: String,
    pub envs: Vec<String>,
    pub groups: Vec<String>,
    pub expires_ms: Option<u64>,
}

#[derive(ToSchema)]
pub struct RunList {
    /// Run records, newest first.
    #[schema(value_type = Vec<Object>)]
    pub runs: Vec<()>,
    /// The cursor of the next page, when this one is full.
    pub next: Option<String>,
}

#[derive(ToSchema)]
pub struct RunDetail {
    /// The run record.
    #[schema(value_type = Object)]
    pub run: (),
    /// Step reports as recorded.
    #[schema(value_type = Vec<Object>)]
    pub steps: Vec<()>,
    /// Steps that started and never ended: `[phase, step]`.
    pub unfinished: Vec<Vec<String>>,
}

#[derive(ToSchema)]
pub struct Journal {
    /// Journal entries, in order.
    #[schema(value_type = Vec<Object>)]
    pub journal: Vec<()>,
}

#[derive(ToSchema)]
pub struct Cancelled {
    pub run_id: String,
    #[schema(value_type = Object)]
    pub cancelled: (),
}

#[derive(ToSchema)]
pub struct Approvals {
    /// What runs wait for: run, step, prompt, deadline, policy.
    #[schema(value_type = Vec<Object>)]
    pub approvals: Vec<()>,
}

#[derive(ToSchema)]
pub struct Decided {
    pub run_id: String,
    pub step: String,
    /// approved or rejected.
    pub decision: String,
    pub by: String,
    /// Approvals counted so far, and how many the environment's policy needs.
    pub approvals: u64,
    pub needed: u64,
}

#[derive(ToSchema)]
pub struct Drills {
    #[schema(value_type = Vec<Object>)]
    pub drills: Vec<()>,
}

#[derive(ToSchema)]
pub struct DrillRecords {
    #[schema(value_type = Vec<Object>)]
    pub records: Vec<()>,
}

#[derive(ToSchema)]
pub struct DrillRun {
    /// The drill's record when it is done; null while it runs.
    #[schema(value_type = Option<Object>)]
    pub drill: Option<()>,
    /// `running` when the answer came before the drill ended.
    pub state: Option<String>,
}

#[derive(ToSchema)]
pub struct AuditList {
    /// who, action, from, result, at_ms; newest last.
    #[schema(value_type = Vec<Object>)]
    pub entries: Vec<()>,
}

#[derive(ToSchema)]
pub struct TokenInfo {
    pub name: String,
    pub role: String,
    pub envs: Vec<String>,
    pub groups: Vec<String>,
    pub created_ms: u64,
    pub created_by: String,
    pub expires_ms: Option<u64>,
    pub revoked_ms: Option<u64>,
}

#[derive(ToSchema)]
pub struct TokenList {
    pub tokens: Vec<TokenInfo>,
}

#[derive(ToSchema)]
pub struct RunbookInfo {
    /// The file's stem: what `POST /runs` names.
    pub name: String,
    /// The runbook's own name, when it parses.
    pub title: Option<String>,
    pub description: Option<String>,
    #[schema(value_type = Option<Vec<Object>>)]
    pub params: Option<Vec<()>>,
    #[schema(value_type = Option<Vec<Object>>)]
    pub environments: Option<Vec<()>>,
    /// Whether its shape is right (`medic validate` checks the rest).
    pub valid: bool,
}

#[derive(ToSchema)]
pub struct RunbookList {
    pub runbooks: Vec<RunbookInfo>,
}

#[derive(ToSchema)]
pub struct Started {
    pub run_id: String,
    pub runbook: String,
    pub environment: String,
}

/// A run picked up again.
#[derive(ToSchema)]
pub struct PickedUp {
    pub run_id: String,
    /// `resume` or `rollback`: a run stopped during its rollback is rolled back, not resumed.
    pub mode: String,
    /// Said when a resume turned into a rollback.
    pub notice: Option<String>,
    /// The journal entry where this pick-up starts (`Last-Event-ID` of the events stream is
    /// one less).
    pub events_from: u64,
}

/// Per alert and matching trigger: what was decided.
#[derive(ToSchema)]
pub struct AlertDecisions {
    /// trigger, alert, fingerprint, decision (start, attached, cooled_down, braked,
    /// resolved, refused, unmatched), run_id, detail.
    #[schema(value_type = Vec<Object>)]
    pub decisions: Vec<()>,
}

#[derive(ToSchema)]
pub struct AlertList {
    /// As recorded: at_ms, trigger, alert, fingerprint, status, labels, starts_at_ms,
    /// decision, run_id, detail.
    #[schema(value_type = Vec<Object>)]
    pub alerts: Vec<()>,
}

#[derive(ToSchema)]
pub struct TriggerList {
    /// name, file, match, runbook, environment, braked, groups.
    #[schema(value_type = Vec<Object>)]
    pub triggers: Vec<()>,
}

#[derive(ToSchema)]
pub struct Rearmed {
    pub trigger: String,
    /// The brake it had (at_ms, reason), if any.
    #[schema(value_type = Option<Object>)]
    pub was_braked: Option<()>,
    pub by: String,
}

/// A runbook parameter's value in `POST /runs`.
#[derive(serde::Serialize, ToSchema)]
#[serde(untagged)]
pub enum ParamValue {
    Text(String),
    Number(f64),
    Boolean(bool),
    List(Vec<String>),
}

/// What a runbook check found.
#[derive(ToSchema)]
pub struct Checked {
    pub valid: bool,
    /// severity (error or warning), message, help, at (line and column, when in the file).
    #[schema(value_type = Vec<Object>)]
    pub diagnostics: Vec<()>,
    /// The plan as `medic plan` prints it, when valid.
    pub plan: Option<String>,
}

/// Change failure rate, rollback success, time to detect and recover, as `medic stats`.
#[derive(ToSchema)]
pub struct StatsBody {
    #[schema(value_type = Object)]
    pub stats: (),
    /// Per alert trigger: alerts, runs_started, deduplicated, cooled_down, braked, refused,
    /// escalated, remediated, mean/p90 time to detect and to remediate (ms).
    #[schema(value_type = Object)]
    pub triggers: (),
}

/// A drill's pause state after a change.
#[derive(ToSchema)]
pub struct PauseState {
    pub name: String,
    /// by, reason, at_ms; null when it runs on schedule.
    #[schema(value_type = Option<Object>)]
    pub paused: Option<()>,
}

struct Bearer;

/// How answers lead to further requests (OpenAPI links): a listed runbook can be checked and
/// started, a started run read, followed and cancelled. Clients and schemathesis's stateful
/// tests use them to reach real runs. Added to the JSON itself: utoipa 5 writes link fields
/// in snake case (`operation_id`), which OpenAPI does not know.
fn links(doc: &mut serde_json::Value) {
    let run = |operation: &str| serde_json::json!({ "operationId": operation, "parameters": { "id": "$response.body#/run_id" } });
    let mut add = |path: &str, method: &str, status: &str, links: serde_json::Value| {
        if let Some(response) = doc
            .pointer_mut(&format!(
                "/paths/{}/{method}/responses/{status}",
                path.replace('/', "~1")
            ))
            .and_then(serde_json::Value::as_object_mut)
        {
            response.insert("links".into(), links);
        }
    };
    add(
        "/runs",
        "post",
        "202",
        serde_json::json!({
            "show": run("show_run"), "journal": run("journal"),
            "events": run("follow"), "cancel": run("cancel_run"),
            "resume": run("resume"), "rollback": run("rollback"),
        }),
    );
    for path in ["/runs/{id}/resume", "/runs/{id}/rollback"] {
        add(
            path,
            "post",
            "202",
            serde_json::json!({ "show": run("show_run"), "events": run("follow") }),
        );
    }
    add(
        "/runbooks",
        "get",
        "200",
        serde_json::json!({
            "check": { "operationId": "check", "parameters": { "name": "$response.body#/runbooks/0/name" } },
            "start": { "operationId": "start", "requestBody": { "runbook": "$response.body#/runbooks/0/name" } },
        }),
    );
}

impl Modify for Bearer {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        let components = openapi.components.get_or_insert_with(Default::default);
        components.add_security_scheme(
            "token",
            SecurityScheme::Http(HttpBuilder::new().scheme(HttpAuthScheme::Bearer).build()),
        );
    }
}

#[derive(OpenApi)]
#[openapi(
    info(
        title = "Medic API",
        description = "Runs, approvals, drills and audit of a `medic serve --listen`. Every resource but health and this document needs `Authorization: Bearer TOKEN` (`medic token create`)."
    ),
    servers((url = "/api/v1")),
    paths(
        super::routes::health,
        super::routes::ready,
        super::routes::whoami,
        super::catalogue::list,
        super::catalogue::show,
        super::catalogue::check,
        super::routes::list_runs,
        super::catalogue::start,
        super::routes::show_run,
        super::routes::journal,
        super::events::follow,
        super::routes::cancel_run,
        super::pickup::resume,
        super::pickup::rollback,
        super::routes::approvals,
        super::routes::approve,
        super::routes::reject,
        super::routes::drills,
        super::routes::drill_records,
        super::routes::run_drill,
        super::routes::pause_drill,
        super::routes::resume_drill,
        super::alerts::alertmanager,
        super::alerts::list,
        super::alerts::triggers,
        super::alerts::rearm,
        super::alerts::hook,
        super::routes::audit,
        super::routes::tokens,
        super::routes::stats,
    ),
    components(schemas(ErrorBody, ErrorDetail, crate::store::RunStatus, ParamValue)),
    modifiers(&Bearer),
    security(("token" = []))
)]
pub struct Doc;

/// The document, as served and as checked in.
pub fn document() -> String {
    let mut doc = Doc::openapi();
    // utoipa writes 3.1.0; the version field is the crate's, so a release changes it.
    doc.info.version = env!("CARGO_PKG_VERSION").to_owned();
    let mut json = serde_json::to_value(&doc).expect("serialize");
    links(&mut json);
    serde_json::to_string_pretty(&json).expect("serialize") + "\n"
}
