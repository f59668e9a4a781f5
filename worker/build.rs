//! Embed libtorch's library folder as an rpath, so that the worker binary runs without
//! LD_LIBRARY_PATH on the machine it was built on (torch-sys reports the folder it linked).
fn main() {
    if let Ok(dir) = std::env::var("DEP_TCH_LIBTORCH_LIB") {
        println!("cargo:rustc-link-arg=-Wl,-rpath,{dir}");
    }
    println!("cargo:rerun-if-env-changed=DEP_TCH_LIBTORCH_LIB");
}
