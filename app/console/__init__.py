"""The web console: pages, the browser session and its CSRF token, templates, assets."""
