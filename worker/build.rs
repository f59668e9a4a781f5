//! Embed libtorch's library folder as an rpath, so that the worker binary runs without
//! LD_LIBRARY_PATH on the machine it was built on (torch-sys reports the folder it linked), and
//! compile the autocast shim (cpp/autocast.cpp) against that libtorch's headers.
use std::path::Path;

fn main() {
    println!("cargo:rerun-if-env-changed=DEP_TCH_LIBTORCH_LIB");
    println!("cargo:rerun-if-env-changed=LIBTORCH_CXX11_ABI");
    println!("cargo:rerun-if-changed=cpp/autocast.cpp");
    let lib = std::env::var("DEP_TCH_LIBTORCH_LIB")
        .expect("torch-sys reports the libtorch it linked (DEP_TCH_LIBTORCH_LIB) on Linux and macOS");
    println!("cargo:rustc-link-arg=-Wl,-rpath,{lib}");
    // libtorch's layout (a download or the pip wheel): lib/ beside include/.
    let include = Path::new(&lib).join("../include");
    let abi = std::env::var("LIBTORCH_CXX11_ABI").unwrap_or_else(|_| "1".into());
    cc::Build::new()
        .cpp(true)
        .pic(true)
        .include(&include)
        .flag("-std=c++17")
        .flag(format!("-D_GLIBCXX_USE_CXX11_ABI={abi}"))
        .file("cpp/autocast.cpp")
        .compile("orchestra_autocast");
}
