//! `GET /` (and `/index.html`): the browser page, one static file. It lists the fleet's
//! cameras from `/api/cameras` and plays each live through Media Source Extensions.

use axum::http::header;
use axum::response::{IntoResponse, Response};

const PAGE: &str = include_str!("page.html");

pub(super) async fn page() -> Response {
    (
        [
            (header::CONTENT_TYPE, "text/html; charset=utf-8"),
            (header::CACHE_CONTROL, "no-store"),
        ],
        PAGE,
    )
        .into_response()
}
