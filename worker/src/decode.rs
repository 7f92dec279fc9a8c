//! Building the ASGI scope dict straight from a message's bytes: one pass,
//! keys interned once per process, headers as a list of `(bytes, bytes)`.

use pyo3::prelude::*;
use pyo3::types::{PyBytes, PyDict, PyList, PyString, PyTuple};
use ringway_server::asgi::wire::Scope;

/// Strings every scope uses, made once.
pub struct Interned {
    k_type: Py<PyString>,
    k_asgi: Py<PyString>,
    k_http_version: Py<PyString>,
    k_server: Py<PyString>,
    k_client: Py<PyString>,
    k_scheme: Py<PyString>,
    k_method: Py<PyString>,
    k_root_path: Py<PyString>,
    k_path: Py<PyString>,
    k_raw_path: Py<PyString>,
    k_query_string: Py<PyString>,
    k_headers: Py<PyString>,
    k_extensions: Py<PyString>,
    v_http: Py<PyString>,
    v_https: Py<PyString>,
    v_10: Py<PyString>,
    v_11: Py<PyString>,
    v_get: Py<PyString>,
    v_post: Py<PyString>,
    /// `{"version": "3.0", "spec_version": "2.4"}`, copied per scope.
    asgi: Py<PyDict>,
    /// What the server supports, copied per scope.
    extensions: Py<PyDict>,
}

impl Interned {
    /// Makes them.
    pub fn new(py: Python<'_>) -> Self {
        let s = |t: &str| PyString::intern(py, t).unbind();
        let asgi = PyDict::new(py);
        asgi.set_item("version", "3.0").expect("dict");
        asgi.set_item("spec_version", "2.4").expect("dict");
        let extensions = PyDict::new(py);
        for e in ["http.response.trailers", "http.response.pathsend"] {
            extensions.set_item(e, PyDict::new(py)).expect("dict");
        }
        Interned {
            k_type: s("type"),
            k_asgi: s("asgi"),
            k_http_version: s("http_version"),
            k_server: s("server"),
            k_client: s("client"),
            k_scheme: s("scheme"),
            k_method: s("method"),
            k_root_path: s("root_path"),
            k_path: s("path"),
            k_raw_path: s("raw_path"),
            k_query_string: s("query_string"),
            k_headers: s("headers"),
            k_extensions: s("extensions"),
            v_http: s("http"),
            v_https: s("https"),
            v_10: s("1.0"),
            v_11: s("1.1"),
            v_get: s("GET"),
            v_post: s("POST"),
            asgi: asgi.unbind(),
            extensions: extensions.unbind(),
        }
    }
}

fn addr<'py>(py: Python<'py>, a: Option<(&str, u16)>) -> PyResult<Bound<'py, PyAny>> {
    Ok(match a {
        Some((host, port)) => PyTuple::new(
            py,
            [
                PyString::new(py, host).into_any(),
                port.into_pyobject(py)?.into_any(),
            ],
        )?
        .into_any(),
        None => py.None().into_bound(py),
    })
}

/// The ASGI HTTP connection scope (www spec 2.5) of a request.
pub fn scope<'py>(py: Python<'py>, k: &Interned, s: &Scope<'_>) -> PyResult<Bound<'py, PyDict>> {
    let d = PyDict::new(py);
    d.set_item(k.k_type.bind(py), k.v_http.bind(py))?;
    d.set_item(k.k_asgi.bind(py), k.asgi.bind(py).copy()?)?;
    d.set_item(
        k.k_http_version.bind(py),
        if s.http11 {
            k.v_11.bind(py)
        } else {
            k.v_10.bind(py)
        },
    )?;
    d.set_item(k.k_server.bind(py), addr(py, s.server)?)?;
    d.set_item(k.k_client.bind(py), addr(py, s.client)?)?;
    d.set_item(
        k.k_scheme.bind(py),
        if s.https {
            k.v_https.bind(py)
        } else {
            k.v_http.bind(py)
        },
    )?;
    let method = match s.method {
        "GET" => k.v_get.bind(py).clone(),
        "POST" => k.v_post.bind(py).clone(),
        m => PyString::new(py, m),
    };
    d.set_item(k.k_method.bind(py), method)?;
    d.set_item(k.k_root_path.bind(py), s.root_path)?;
    d.set_item(k.k_path.bind(py), s.path)?;
    d.set_item(k.k_raw_path.bind(py), PyBytes::new(py, s.raw_path))?;
    d.set_item(k.k_query_string.bind(py), PyBytes::new(py, s.query_string))?;
    let headers = PyList::empty(py);
    for (name, value) in s.headers.iter() {
        headers.append(PyTuple::new(
            py,
            [PyBytes::new(py, name), PyBytes::new(py, value)],
        )?)?;
    }
    d.set_item(k.k_headers.bind(py), headers)?;
    d.set_item(k.k_extensions.bind(py), k.extensions.bind(py).copy()?)?;
    Ok(d)
}
