use super::*;

const BASE: &str = r#"
min_daily_savings = 0.5

[providers.anthropic]
kind = "anthropic"

[providers.openai]
kind = "openai"
requests_per_minute = 500

[[workloads]]
name = "triage"
on = "ticket.created"
provider = "anthropic"
model = "claude-haiku-5-5"
prompt = "Triage: {{ payload.subject }}"
max_tokens = 200
needed_within = "2m"
delay_cost = "significant"
volume_per_day = 1000

[[workloads]]
name = "digest"
on = "ticket.created"
provider = "anthropic"
model = "claude-sonnet-5-5"
prompt = "Summarize {{ payload.body }} given {{ after.output }}"
max_tokens = 400
needed_by = "18:00"
delay_cost = "minimal"
volume_per_day = 1000
after = "triage"
"#;

fn parse(src: &str) -> Result<Config, ConfigError> {
    Config::parse(src, "sluice.toml")
}

/// The single problem of a config that must fail, rendered.
fn error(src: &str) -> (Problem, String) {
    let e = parse(src).expect_err("config should be refused");
    let text = e.to_string();
    assert_eq!(e.problems.len(), 1, "{text}");
    (e.problems[0].clone(), text)
}

#[test]
fn a_valid_config_resolves_every_reference() {
    let c = parse(BASE).unwrap();
    assert_eq!(c.providers.len(), 2);
    let digest = c.workload("digest").unwrap();
    assert_eq!(digest.after, Some(0));
    assert_eq!(c.provider(digest).name, "anthropic");
    assert_eq!(digest.deadline, Some(Deadline::By(NaiveTime::from_hms_opt(18, 0, 0).unwrap())));
    assert_eq!(digest.price.input, 2.0);
    assert!(c.prompts.contains("digest.prompt"));
    assert_eq!(c.providers[1].base_url.as_str(), "https://api.openai.com/v1");
    assert_eq!(c.providers[1].api_key_env.as_deref(), Some("OPENAI_API_KEY"));
}

#[test]
fn a_misspelt_key_names_line_field_and_the_nearest_name() {
    let src = BASE.replace("needed_within = \"2m\"", "neded_within = \"2m\"");
    let (p, text) = error(&src);
    assert_eq!(p.field.as_deref(), Some("workloads[0].neded_within"));
    assert_eq!(p.location.as_ref().map(|l| (l.line, l.column)), Some((18, 1)));
    assert!(text.contains("unknown field `neded_within`"), "{text}");
    assert!(text.contains("did you mean `needed_within`?"), "{text}");
    assert!(text.contains("--> sluice.toml:18:1"), "{text}");
}

#[test]
fn a_misspelt_enum_value_suggests_the_nearest() {
    let src = BASE.replace("delay_cost = \"significant\"", "delay_cost = \"signifcant\"");
    let (p, text) = error(&src);
    assert_eq!(p.field.as_deref(), Some("workloads[0].delay_cost"));
    assert!(text.contains("did you mean `significant`?"), "{text}");
}

#[test]
fn an_unknown_provider_lists_the_known_ones() {
    let src = BASE.replace(
        "provider = \"anthropic\"\nmodel = \"claude-haiku",
        "provider = \"antropic\"\nmodel = \"claude-haiku",
    );
    let (p, text) = error(&src);
    assert_eq!(p.field.as_deref(), Some("workloads[0].provider"));
    assert!(text.contains("no provider is named \"antropic\""), "{text}");
    assert!(text.contains("one of the [providers] tables: anthropic, openai"), "{text}");
    assert!(text.contains("did you mean `anthropic`?"), "{text}");
    assert!(text.contains("sluice.toml:14:12"), "{text}");
}

#[test]
fn an_after_cycle_is_refused_with_the_circle_spelt_out() {
    let src = BASE.replace(
        "prompt = \"Triage: {{ payload.subject }}\"",
        "prompt = \"Triage: {{ payload.subject }} {{ after.output }}\"\nafter = \"digest\"",
    );
    let (p, text) = error(&src);
    assert!(p.message.contains("circle"), "{text}");
    assert!(
        text.contains("triage → digest → triage") || text.contains("digest → triage → digest"),
        "{text}"
    );
    assert!(p.location.is_some(), "{text}");
}

#[test]
fn after_on_another_event_type_is_refused() {
    let src = BASE.replace(
        "on = \"ticket.created\"\nprovider = \"anthropic\"\nmodel = \"claude-sonnet",
        "on = \"lead.created\"\nprovider = \"anthropic\"\nmodel = \"claude-sonnet",
    );
    let (_, text) = error(&src);
    assert!(text.contains("a chain stays within one event"), "{text}");
}

#[test]
fn a_model_without_a_price_needs_an_override() {
    let src = BASE.replace("claude-haiku-5-5", "claude-haiku-9");
    let (p, text) = error(&src);
    assert_eq!(p.field.as_deref(), Some("workloads[0].model"));
    assert!(text.contains("[providers.anthropic.prices.\"claude-haiku-9\"]"), "{text}");

    let priced = format!(
        "{src}\n[providers.anthropic.prices.\"claude-haiku-9\"]\ninput = 1.0\noutput = 2.0\n"
    );
    // Appending to the last [[workloads]] table would misplace it; put the table before.
    let priced = priced.replacen("[providers.openai]", "[providers.anthropic.prices.\"claude-haiku-9\"]\ninput = 1.0\noutput = 2.0\n\n[providers.openai]", 1);
    let priced =
        priced.rsplit_once("\n[providers.anthropic.prices").map(|(a, _)| a.to_owned()).unwrap();
    let c = parse(&priced).unwrap();
    assert_eq!(c.workload("triage").unwrap().price.output, 2.0);
}

#[test]
fn templates_may_only_use_what_an_event_provides() {
    let src = BASE.replace("Triage: {{ payload.subject }}", "Triage: {{ ticket.subject }}");
    let (_, text) = error(&src);
    assert!(text.contains("uses `ticket`, which it cannot render"), "{text}");

    let src = BASE.replace("Triage: {{ payload.subject }}", "Triage: {{ after.output }}");
    let (_, text) = error(&src);
    assert!(text.contains("uses `after`"), "{text}");

    let src = BASE.replace("Triage: {{ payload.subject }}", "Triage this ticket");
    let (_, text) = error(&src);
    assert!(text.contains("uses nothing of the event"), "{text}");

    let src = BASE.replace("Triage: {{ payload.subject }}", "Triage: {{ payload.subject ");
    let (_, text) = error(&src);
    assert!(text.contains("does not compile"), "{text}");
}

#[test]
fn needed_by_must_be_a_time_of_day() {
    let src = BASE.replace("needed_by = \"18:00\"", "needed_by = \"6pm\"");
    let (p, text) = error(&src);
    assert_eq!(p.field.as_deref(), Some("workloads[1].needed_by"));
    assert!(text.contains("\"6pm\" is not a time of day"), "{text}");
    assert!(text.contains("sluice.toml:29:13"), "{text}");
}

#[test]
fn negative_numbers_are_refused() {
    let (p, _) = error(&BASE.replace("volume_per_day = 1000\nafter", "volume_per_day = -5\nafter"));
    assert_eq!(p.field.as_deref(), Some("workloads[1].volume_per_day"));
    let (p, text) = error(&BASE.replace("max_tokens = 200", "max_tokens = -200"));
    assert_eq!(p.field.as_deref(), Some("workloads[0].max_tokens"));
    assert!(text.contains("a whole number"), "{text}");
    let (p, _) = error(&BASE.replace("min_daily_savings = 0.5", "min_daily_savings = -1"));
    assert_eq!(p.field.as_deref(), Some("min_daily_savings"));
}

#[test]
fn every_problem_is_reported_at_once() {
    let src = BASE
        .replace(
            "provider = \"anthropic\"\nmodel = \"claude-haiku",
            "provider = \"antropic\"\nmodel = \"claude-haiku",
        )
        .replace("needed_by = \"18:00\"", "needed_by = \"6pm\"");
    let e = parse(&src).unwrap_err();
    assert_eq!(e.problems.len(), 2, "{e}");
}

#[test]
fn a_key_in_the_config_is_refused_without_echoing_it() {
    let src = BASE.replace(
        "requests_per_minute = 500",
        "api_key_env = \"sk-proj-abcdefghijklmnopqrstuvwxyz0123456789\"",
    );
    let (_, text) = error(&src);
    assert!(text.contains("looks like an API key"), "{text}");
    assert!(!text.contains("abcdefghijklmnop\"") || text.contains("api_key_env = \"sk-"), "{text}");
}

#[test]
fn syntax_errors_are_located() {
    let (p, text) = error("[providers.a\nkind = 1");
    assert!(p.location.is_some(), "{text}");
    assert!(text.contains("sluice.toml:1:"), "{text}");
}

#[test]
fn flex_and_batch_lanes_must_be_offered() {
    let src = BASE
        .replace("delay_cost = \"significant\"", "delay_cost = \"significant\"\nlane = \"flex\"");
    let (_, text) = error(&src);
    assert!(text.contains("has no flex tier"), "{text}");
}

#[test]
fn deadlines_give_slack_by_time_of_day() {
    let by = Deadline::By(NaiveTime::from_hms_opt(8, 0, 0).unwrap());
    assert_eq!(
        by.slack_at(NaiveTime::from_hms_opt(22, 0, 0).unwrap()),
        Duration::from_secs(10 * 3600)
    );
    assert_eq!(by.slack_at(NaiveTime::from_hms_opt(7, 30, 0).unwrap()), Duration::from_secs(1800));
    assert_eq!(by.slack_at(NaiveTime::from_hms_opt(8, 0, 0).unwrap()), Duration::from_secs(86_400));
}

#[test]
fn off_peak_windows_wrap_midnight() {
    let w = parse_window("22:00-06:00").unwrap();
    assert!(w.contains(NaiveTime::from_hms_opt(23, 0, 0).unwrap()));
    assert!(w.contains(NaiveTime::from_hms_opt(5, 59, 0).unwrap()));
    assert!(!w.contains(NaiveTime::from_hms_opt(12, 0, 0).unwrap()));
    assert!(parse_window("22:00").is_none());
}

#[test]
fn hooks_map_to_known_event_types() {
    let src = format!(
        "{BASE}\n[hooks.helpdesk]\nsecret_env = \"HELPDESK_SECRET\"\ntype_field = \"/type\"\npayload_field = \"/data\"\n[hooks.helpdesk.types]\n\"ticket.opened\" = \"ticket.created\"\n"
    );
    let c = parse(&src).unwrap();
    let h = c.hook("helpdesk").unwrap();
    assert_eq!(h.tolerance, Duration::from_secs(300));
    assert!(matches!(&h.event_type, HookType::Field { pointer, .. } if pointer == "/type"));

    let bad = src
        .replace("\"ticket.opened\" = \"ticket.created\"", "\"ticket.opened\" = \"ticket.create\"");
    let (_, text) = error(&bad);
    assert!(text.contains("no workload runs on \"ticket.create\""), "{text}");
    assert!(text.contains("did you mean `ticket.created`?"), "{text}");
}
