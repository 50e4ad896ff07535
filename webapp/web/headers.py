"""Security headers on every response: no framing, no inline script or style, no sniffing."""

# Only our own scripts, styles, fetches and forms. `data:` images are for the classify page's
# thumbnail of the picture just sent, which is never stored. frame-ancestors 'none' (and the
# older X-Frame-Options) stops another site framing the admin pages to clickjack their buttons.
CONTENT_SECURITY_POLICY = "; ".join([
    "default-src 'self'",
    "img-src 'self' data:",
    "frame-ancestors 'none'",
    "base-uri 'self'",
    "form-action 'self'",
    "object-src 'none'",
])

HEADERS = {
    "Content-Security-Policy": CONTENT_SECURITY_POLICY,
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "same-origin",
    "X-Frame-Options": "DENY",
}


def add_security_headers(response):
    """Set the security headers on `response`, keeping any a view chose itself."""
    for name, value in HEADERS.items():
        response.headers.setdefault(name, value)
    return response


def init_app(app):
    """Send the security headers with every response, pages, errors and static files alike."""
    app.after_request(add_security_headers)
