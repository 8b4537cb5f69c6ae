//! Query strings, pagination and the list envelope every list endpoint answers with.
//!
//! Two pagination styles are accepted (the seeds use both): `_start`/`_end` (zero-based,
//! end exclusive) and `page`/`limit` (page from 1). Mixing them is a 400. Every listing
//! answers `{"data": [...], "total": N, "page": P, "limit": L}` and sets `X-Total-Count`.
//!
//! Query values are parsed by hand rather than by serde so a bad value is a 400 naming the
//! parameter and the valid values, and an unknown parameter (a typo like `stauts`) is
//! refused instead of silently returning everything.

use axum::Json;
use axum::http::{HeaderName, HeaderValue};
use axum::response::{IntoResponse, Response};
use chrono::{DateTime, Utc};
use serde::Serialize;
use utoipa::ToSchema;

use crate::problem::Problem;

/// Default rows per page.
pub const DEFAULT_LIMIT: u64 = 20;
/// Largest page.
pub const MAX_LIMIT: u64 = 1000;

/// The parameters of one query string, consumed one by one.
#[derive(Debug, Default)]
pub struct QueryParams {
    pairs: Vec<(String, String)>,
    known: Vec<&'static str>,
}

impl QueryParams {
    /// Parses a raw query string (`None` = no query).
    pub fn parse(raw: Option<&str>) -> Result<Self, Problem> {
        let mut pairs: Vec<(String, String)> = Vec::new();
        for (k, v) in url::form_urlencoded::parse(raw.unwrap_or("").as_bytes()) {
            if pairs.iter().any(|(seen, _)| *seen == k) {
                return Err(Problem::bad_parameter(&k, "is given more than once; give it once"));
            }
            pairs.push((k.into_owned(), v.into_owned()));
        }
        Ok(QueryParams { pairs, known: Vec::new() })
    }

    /// The raw value of `name` (an empty value counts as absent).
    pub fn string(&mut self, name: &'static str) -> Option<String> {
        self.known.push(name);
        self.pairs.iter().find(|(k, _)| k == name).map(|(_, v)| v.clone()).filter(|v| !v.is_empty())
    }

    /// An unsigned integer.
    pub fn u64(&mut self, name: &'static str) -> Result<Option<u64>, Problem> {
        match self.string(name) {
            None => Ok(None),
            Some(v) => v.trim().parse::<u64>().map(Some).map_err(|_| {
                Problem::bad_parameter(name, format!("must be a non-negative integer, got '{v}'"))
            }),
        }
    }

    /// A signed integer.
    pub fn i64(&mut self, name: &'static str) -> Result<Option<i64>, Problem> {
        match self.string(name) {
            None => Ok(None),
            Some(v) => v.trim().parse::<i64>().map(Some).map_err(|_| {
                Problem::bad_parameter(name, format!("must be an integer, got '{v}'"))
            }),
        }
    }

    /// `true`/`false` (also `1`/`0`).
    pub fn bool(&mut self, name: &'static str) -> Result<Option<bool>, Problem> {
        match self.string(name).as_deref() {
            None => Ok(None),
            Some("true" | "1") => Ok(Some(true)),
            Some("false" | "0") => Ok(Some(false)),
            Some(v) => {
                Err(Problem::bad_parameter(name, format!("must be true or false, got '{v}'")))
            }
        }
    }

    /// An RFC 3339 timestamp.
    pub fn time(&mut self, name: &'static str) -> Result<Option<DateTime<Utc>>, Problem> {
        match self.string(name) {
            None => Ok(None),
            Some(v) => parse_time(&v).map(Some).map_err(|m| Problem::bad_parameter(name, m)),
        }
    }

    /// One of `valid` (any case), parsed by `parse`.
    pub fn one_of<T>(
        &mut self,
        name: &'static str,
        valid: &[&str],
        parse: impl Fn(&str) -> Option<T>,
    ) -> Result<Option<T>, Problem> {
        match self.string(name) {
            None => Ok(None),
            Some(v) => parse(&v).map(Some).ok_or_else(|| {
                Problem::bad_parameter(
                    name,
                    format!("must be one of {}, got '{v}'", valid.join(", ")),
                )
            }),
        }
    }

    /// Refuses parameters nobody read, naming the valid ones.
    pub fn finish(self) -> Result<(), Problem> {
        let mut valid = self.known.clone();
        valid.sort_unstable();
        valid.dedup();
        match self.pairs.iter().find(|(k, _)| !self.known.contains(&k.as_str())) {
            None => Ok(()),
            Some((k, _)) => Err(Problem::bad_parameter(
                k,
                format!(
                    "is not a parameter of this endpoint; valid parameters: {}",
                    valid.join(", ")
                ),
            )),
        }
    }
}

/// Parses an RFC 3339 timestamp, with a message saying what would be valid.
pub fn parse_time(v: &str) -> Result<DateTime<Utc>, String> {
    DateTime::parse_from_rfc3339(v.trim())
        .map(|t| t.with_timezone(&Utc))
        .map_err(|_| format!("must be an RFC 3339 timestamp like 2024-01-01T10:00:00Z, got '{v}'"))
}

/// Which rows a listing returns.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PageRequest {
    /// Rows to skip.
    pub offset: u64,
    /// Rows to return.
    pub limit: u64,
    /// The page number reported in the envelope (from 1).
    pub page: u64,
}

impl PageRequest {
    /// Reads `_start`/`_end` or `page`/`limit` from `q`.
    pub fn from_query(q: &mut QueryParams) -> Result<PageRequest, Problem> {
        let start = q.u64("_start")?;
        let end = q.u64("_end")?;
        let page = q.u64("page")?;
        let limit = q.u64("limit")?;
        if (start.is_some() || end.is_some()) && (page.is_some() || limit.is_some()) {
            let name = if page.is_some() { "page" } else { "limit" };
            return Err(Problem::bad_parameter(
                name,
                "cannot be combined with _start/_end; use one pagination style",
            ));
        }
        if start.is_some() || end.is_some() {
            let start = start.unwrap_or(0);
            let end = end.unwrap_or(start.saturating_add(DEFAULT_LIMIT));
            if end <= start {
                // An empty range would mean "limit 0", which the store reads as "no limit".
                return Err(Problem::bad_parameter(
                    "_end",
                    format!("must be greater than _start ({start}), got {end}"),
                ));
            }
            let limit = end - start;
            if limit > MAX_LIMIT {
                return Err(Problem::bad_parameter(
                    "_end",
                    format!("_end - _start must be at most {MAX_LIMIT}, got {limit}"),
                ));
            }
            let page = start.checked_div(limit).map_or(1, |p| p + 1);
            return Ok(PageRequest { offset: start, limit, page });
        }
        let page = page.unwrap_or(1);
        if page == 0 {
            return Err(Problem::bad_parameter("page", "must be 1 or more (pages count from 1)"));
        }
        let limit = limit.unwrap_or(DEFAULT_LIMIT);
        if !(1..=MAX_LIMIT).contains(&limit) {
            return Err(Problem::bad_parameter(
                "limit",
                format!("must be between 1 and {MAX_LIMIT}, got {limit}"),
            ));
        }
        Ok(PageRequest { offset: (page - 1).saturating_mul(limit), limit, page })
    }

    /// The rows of an in-memory list this page covers.
    pub fn slice<T: Clone>(&self, all: &[T]) -> Vec<T> {
        all.iter().skip(self.offset as usize).take(self.limit as usize).cloned().collect()
    }
}

/// The list envelope.
#[derive(Debug, Clone, PartialEq, Serialize, ToSchema)]
pub struct ListResponse<T> {
    /// The rows of this page.
    pub data: Vec<T>,
    /// How many rows match in all (also in `X-Total-Count`).
    pub total: u64,
    /// This page's number (from 1).
    pub page: u64,
    /// Rows per page.
    pub limit: u64,
}

impl<T> ListResponse<T> {
    /// An envelope for `data`, one page of `total`.
    pub fn new(data: Vec<T>, total: u64, page: &PageRequest) -> Self {
        ListResponse { data, total, page: page.page, limit: page.limit }
    }
}

/// The header carrying the total (json-server / react-admin convention).
pub static X_TOTAL_COUNT: HeaderName = HeaderName::from_static("x-total-count");

impl<T: Serialize> IntoResponse for ListResponse<T> {
    fn into_response(self) -> Response {
        let total = self.total;
        let mut response = Json(self).into_response();
        response.headers_mut().insert(X_TOTAL_COUNT.clone(), HeaderValue::from(total));
        response
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn page(q: &str) -> Result<PageRequest, Problem> {
        let mut params = QueryParams::parse(Some(q))?;
        let p = PageRequest::from_query(&mut params)?;
        params.finish()?;
        Ok(p)
    }

    #[test]
    fn both_styles() {
        assert_eq!(page("").unwrap(), PageRequest { offset: 0, limit: 20, page: 1 });
        assert_eq!(
            page("_start=10&_end=20").unwrap(),
            PageRequest { offset: 10, limit: 10, page: 2 }
        );
        assert_eq!(page("page=3&limit=5").unwrap(), PageRequest { offset: 10, limit: 5, page: 3 });
    }

    #[test]
    fn bad_values_name_the_parameter() {
        let p = page("limit=0").unwrap_err();
        assert_eq!(p.detail, "query parameter 'limit' must be between 1 and 1000, got 0");
        let p = page("page=1&_start=0").unwrap_err();
        assert_eq!(p.errors[0].path, "page");
        let p = page("_start=5&_end=2").unwrap_err();
        assert_eq!(p.detail, "query parameter '_end' must be greater than _start (5), got 2");
        let p = page("stauts=queued").unwrap_err();
        assert_eq!(
            p.detail,
            "query parameter 'stauts' is not a parameter of this endpoint; valid parameters: _end, _start, limit, page"
        );
        let p = page("page=x").unwrap_err();
        assert_eq!(p.detail, "query parameter 'page' must be a non-negative integer, got 'x'");
    }
}
