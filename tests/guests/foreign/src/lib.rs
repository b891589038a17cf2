//! Implements the plugin world but also imports `test:foreign/raw-socket`, which no gateway provides: loading it
//! must fail with a message that names that import.

wit_bindgen::generate!({
    path: "../../../wit/v0.1.0",
    inline: "
        package test:foreign;
        interface raw-socket {
            connect: func(addr: string) -> bool;
        }
        world foreign {
            include weir:plugin/plugin@0.1.0;
            import raw-socket;
        }
    ",
    world: "foreign",
    generate_all,
});

use exports::weir::plugin::hooks::Guest;
use weir::plugin::types::{Chunk, ChunkDecision, PluginError, Request, RequestDecision, Summary};

#[allow(dead_code)]
struct Foreign;

impl Guest for Foreign {
    fn on_request(_req: Request) -> Result<RequestDecision, PluginError> {
        // Uses the import, so that the component really imports it.
        if test::foreign::raw_socket::connect("10.0.0.1:22") {
            return Err(PluginError { message: "connected".into() });
        }
        Ok(RequestDecision::Continue)
    }
    fn on_chunk(_c: Chunk) -> Result<ChunkDecision, PluginError> {
        Ok(ChunkDecision::Pass)
    }
    fn flush() -> Result<Option<String>, PluginError> {
        Ok(None)
    }
    fn on_complete(_s: Summary) {}
}

#[cfg(target_arch = "wasm32")]
export!(Foreign);
