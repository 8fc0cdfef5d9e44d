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

/// Where a task's pipeline stands given the steps already done.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Next {
    /// The role at this index runs next.
    Run(usize),
    /// Every role has run and the last review (if any) passed.
    Complete,
    /// A reviewer rejected the work again after its one send-back: the work did not pass,
    /// so the task must not end as a success with the review as its answer.
    Rejected { role: String, review: String },
}

/// What runs next. A reviewing role's `REVISE:` sends the work back to the role before
/// it, once per task; a second `REVISE:` rejects the task.
pub fn next_role(team: &Team, done: &[Done]) -> Next {
    let mut idx = 0usize;
    let mut sent_back = false;
    for d in done {
        let Some(role) = team.roles.get(idx) else { return Next::Complete };
        if role.role != d.role {
            // The catalogue changed under a running task: follow the stored steps by name.
            match team.roles.iter().position(|r| r.role == d.role) {
                Some(i) => idx = i,
                None => return Next::Complete,
            }
        }
        let role = &team.roles[idx];
        let revise = role.reviews && idx > 0 && d.output.trim_start().starts_with(REVISE);
        if revise && sent_back {
            return Next::Rejected { role: d.role.clone(), review: d.output.clone() };
        } else if revise {
            sent_back = true;
            idx -= 1;
        } else {
            idx += 1;
        }
    }
    if idx < team.roles.len() {
        Next::Run(idx)
    } else {
        Next::Complete
    }
}

/// The task's answer: the output of the last role that produces work rather than
/// reviewing it (a reviewer's approval is not the deliverable).
pub fn result<'a>(team: &Team, done: &'a [Done]) -> Option<&'a str> {
    let reviews = |d: &Done| team.roles.iter().any(|r| r.role == d.role && r.reviews);
    done.iter().rev().find(|d| !reviews(d)).or(done.last()).map(|d| d.output.as_str())
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
    fn roles_run_in_order_and_a_reviewer_sends_back_once_then_rejects() {
        let t = team();
        assert_eq!(next_role(&t, &[]), Next::Run(0));
        assert_eq!(next_role(&t, &[d("lead", "code")]), Next::Run(1));
        assert_eq!(next_role(&t, &[d("lead", "code"), d("review", "fine")]), Next::Complete);
        let back = [d("lead", "code"), d("review", "REVISE: fix the loop")];
        assert_eq!(next_role(&t, &back), Next::Run(0));
        let passed = [d("lead", "code"), d("review", "REVISE: x"), d("lead", "code 2"), d("review", "ok")];
        assert_eq!(next_role(&t, &passed), Next::Complete);
        assert_eq!(result(&t, &passed), Some("code 2"), "the work, not the approval");
        let again = [d("lead", "code"), d("review", "REVISE: x"), d("lead", "code 2"), d("review", "REVISE: y")];
        assert_eq!(next_role(&t, &again), Next::Rejected { role: "review".into(), review: "REVISE: y".into() });
        assert!(was_sent_back(&t, &again));
        assert!(!was_sent_back(&t, &[d("lead", "REVISE: not a reviewer")]));
        assert_eq!(next_role(&t, &[d("lead", "REVISE: not a reviewer")]), Next::Run(1));
    }
}
