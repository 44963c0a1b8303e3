//! Prints how the verifier reads each argument: `cargo run -p verifier --example parse -- 'x^2'`.
fn main() {
    for arg in std::env::args().skip(1) {
        println!("{arg:?}");
        println!("  tokens: {:?}", verifier::lexer::lex(&arg));
        println!("  parsed: {:?}", verifier::parse_answer(&arg, 2000));
    }
}
