//! The `{{var}}` template language (paths, URLs, headers): parse arbitrary text and render
//! whatever parses. Also compiles the text as a Handlebars template (the `template` output
//! format) and renders it, since both take operator-written text.

#![no_main]

use libfuzzer_sys::fuzz_target;
use outflow_core::context::RenderContext;
use outflow_core::format::HandlebarsTemplate;
use outflow_core::output::Output;
use outflow_core::template::Template;
use outflow_fuzz::{DELIVERY_ID, fixed_job};
use serde_json::json;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else { return };
    let job = fixed_job();
    let output = Output::Json(json!({"rows": [{"a": 1, "b": "x"}], "ok": true}));
    let ctx = RenderContext::new(&job, &output, DELIVERY_ID);

    if let Ok(template) = Template::parse(text) {
        assert_eq!(template.source(), text, "a template keeps its source");
        let rendered = template.render(&ctx);
        // A template without variables renders the same whatever the context.
        if template.is_static() {
            assert!(rendered.is_ok(), "a static template cannot fail to render");
        }
        let _ = template.render_with(&ctx, &|v| v.replace('/', "%2F"));
    }

    if let Ok(hbs) = HandlebarsTemplate::compile(text) {
        let _ = hbs.render_value(&ctx.to_json());
    }
});
