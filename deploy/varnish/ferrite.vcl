# Varnish in front of Ferrite: shape reads cached and live long-polls collapsed, like
# deploy/nginx, but waiters are woken the moment Ferrite answers (no 500 ms lock re-check).
#
#   varnishd -a :8080 -f /etc/ferrite/varnish/ferrite.vcl -s malloc,1g
#
# For auth.mode = "insecure" or a `secret`. In jwt mode requests carry Authorization, which
# this file (like Varnish's default) passes to Ferrite uncached. Tested as shipped by
# crates/ferrite/tests/e2e/cdn.rs (only the backend's port is changed).
vcl 4.1;

backend ferrite {
    .host = "127.0.0.1";
    .port = "3000";
    # Above Ferrite's long-poll timeout (long_poll_timeout_ms, 20 s by default): Ferrite holds
    # a live request until there is news.
    .first_byte_timeout = 30s;
    .between_bytes_timeout = 30s;
}

sub vcl_recv {
    # Live clients come back for the next change at once, but one may take a moment (a page in
    # the background); keep its connection rather than make it reconnect.
    set sess.timeout_idle = 60s;
    if (req.url ~ "^/v1/shape(\?|$)" && (req.method == "GET" || req.method == "HEAD")) {
        # Server-sent events stream; they are neither shared nor buffered.
        if (req.url ~ "[?&](live_sse|experimental_live_sse)=(true|1)(&|$)") {
            return (pipe);
        }
        if (req.http.Authorization) {
            return (pass);
        }
        # Cookies do not change a shape response.
        unset req.http.Cookie;
        # One object per URL (and encoding, by Ferrite's `vary: accept-encoding`); requests for
        # an object being fetched wait for it and all get its bytes.
        return (hash);
    }
    return (pass);
}

sub vcl_backend_response {
    # Ferrite's cache-control says how long (live responses 5 s, catch-up chunks longer,
    # errors no-store); an uncacheable answer must not make the next readers wait in line.
    if (beresp.ttl <= 0s || beresp.http.cache-control ~ "(no-store|private)") {
        set beresp.uncacheable = true;
        set beresp.ttl = 1s;
        return (deliver);
    }
}

sub vcl_deliver {
    # HIT / MISS per response, for checking the setup.
    if (obj.hits > 0) {
        set resp.http.x-cache-status = "HIT";
    } else {
        set resp.http.x-cache-status = "MISS";
    }
}
