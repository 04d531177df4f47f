//! `bastion-shell`: the users' login shell. See [`bastion::client`].
#![forbid(unsafe_code)]

fn main() {
    let code = bastion::client::main_with(std::env::args_os().collect(), std::env::vars_os());
    std::process::exit(code);
}
