//! A team's pipeline: which role runs next given the steps already done, and what each
//! role is told.

use j1msky_core::catalogue::{Role, Team};
use serde::Serialize;

/// A reviewer sends work back by starting its answer with this.
pub const REVISE: &str = "REVISE:";

/// A step already done, as the pipeline needs it.
#[derive(Debug, Clone, Serialize)]
pub struct Done {
    pub role: String,
    pub output: String,
}

/// The index of the role that runs next, or None when the pipeline is complete. A
/// reviewing role's `REVISE:` sends the work back to the role before it, once per task.
pub fn next_role(team: &Team, done: &[Done]) -> Option<usize> {
    let mut idx = 0usize;
    let mut sent_back = false;
    for d in done {
        let role = team.roles.get(idx)?;
        if role.role != d.role {
            // The catalogue changed under a running task: follow the stored steps by name.
            idx = team.roles.iter().position(|r| r.role == d.role)?;
        }
        let role = &team.roles[idx];
        if role.reviews && !sent_back && idx > 0 && d.output.trim_start().starts_with(REVISE) {
            sent_back = true;
            idx -= 1;
        } else {
            idx += 1;
        }
    }
    (idx < team.roles.len()).then_some(idx)
}

/// Whether a reviewer sent the work back.
pub fn was_sent_back(team: &Team, done: &[Done]) -> bool {
    done.iter()
        .any(|d| d.output.trim_start().starts_with(REVISE) && team.roles.iter().any(|r| r.role == d.role && r.reviews))
}

/// The system prompt of `role`: its template, or one built from its purpose.
pub fn system_prompt(
    team_id: &str,
    team: &Team,
    role: &Role,
    title: &str,
    prompt: &str,
    category: &str,
    done: &[Done],
) -> Result<String, String> {
    let ctx = serde_json::json!({
        "team": team.name, "team_id": team_id, "role": role.role, "purpose": role.purpose,
        "task": {"title": title, "prompt": prompt, "category": category},
        "previous": done,
    });
    match &role.prompt {
        Some(t) => minijinja::Environment::new()
            .render_str(t, ctx)
            .map_err(|e| format!("the prompt template of {team_id}/{} does not render: {e}", role.role)),
        None => {
            let mut s = format!("You are the {} of the {}. Your job: {}.", role.role, team.name, role.purpose);
            if role.reviews {
                s.push_str(&format!(
                    " If the work needs another pass, start your answer with {REVISE} and say what to change."
                ));
            }
            Ok(s)
        }
    }
}

/// The user message of a step: the task, then what the earlier steps produced.
pub fn user_message(title: &str, prompt: &str, done: &[Done]) -> String {
    let mut s = format!("Task: {title}\n\n{prompt}");
    for d in done {
        s.push_str(&format!("\n\n--- {} wrote ---\n{}", d.role, d.output));
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    fn team() -> Team {
        let c = j1msky_core::catalogue::Catalogue::from_json_str(j1msky_core::catalogue::SHIPPED).expect("catalogue");
        c.teams["code"].clone()
    }

    fn d(role: &str, output: &str) -> Done {
        Done { role: role.into(), output: output.into() }
    }

    #[test]
    fn roles_run_in_order_and_a_reviewer_sends_back_once() {
        let t = team();
        assert_eq!(next_role(&t, &[]), Some(0));
        assert_eq!(next_role(&t, &[d("lead", "code")]), Some(1));
        assert_eq!(next_role(&t, &[d("lead", "code"), d("review", "fine")]), None);
        let back = [d("lead", "code"), d("review", "REVISE: fix the loop")];
        assert_eq!(next_role(&t, &back), Some(0));
        let again = [d("lead", "code"), d("review", "REVISE: x"), d("lead", "code 2"), d("review", "REVISE: y")];
        assert_eq!(next_role(&t, &again), None, "only one send-back");
        assert!(was_sent_back(&t, &again));
        assert!(!was_sent_back(&t, &[d("lead", "REVISE: not a reviewer")]));
    }
}
