"""failure_test: a test that passes when a target fails analysis with an expected message."""

def _failure_test_impl(ctx):
    target = ctx.attr.target[0]  # a list, because of the transition
    if AnalysisFailureInfo not in target:
        return [AnalysisTestResultInfo(
            success = False,
            message = "%s was analyzed without error; expected a failure containing %r" % (target.label, ctx.attr.message),
        )]
    messages = [cause.message for cause in target[AnalysisFailureInfo].causes.to_list()]
    found = [m for m in messages if ctx.attr.message in m]
    return [AnalysisTestResultInfo(
        success = bool(found),
        message = "" if found else "%s failed, but no error contains %r; errors:\n%s" % (target.label, ctx.attr.message, "\n".join(messages)),
    )]

_allow_failures = analysis_test_transition(
    settings = {"//command_line_option:allow_analysis_failures": "True"},
)

failure_test = rule(
    implementation = _failure_test_impl,
    doc = "Passes when `target` (tag it `manual`) fails analysis with an error containing `message`.",
    attrs = {
        "target": attr.label(mandatory = True, cfg = _allow_failures, doc = "The target expected to fail analysis."),
        "message": attr.string(mandatory = True, doc = "A substring of the expected error."),
    },
    analysis_test = True,
    test = True,
)
