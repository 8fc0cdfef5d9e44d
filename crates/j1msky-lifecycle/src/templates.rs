//! Templates: `config/templates/<name>.subject.j2`, `<name>.txt.j2`, `<name>.html.j2`,
//! rendered by minijinja with strict undefined.

use crate::LifecycleError;

/// A rendered message body.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rendered {
    pub subject: String,
    pub text: String,
    pub html: String,
}

/// Renders template `name` with `context`.
pub fn render(ctx: &crate::Ctx, name: &str, context: &serde_json::Value) -> Result<Rendered, LifecycleError> {
    let _ = (ctx, context);
    Err(LifecycleError::Template { template: name.into(), message: "templates are not built yet".into() })
}
