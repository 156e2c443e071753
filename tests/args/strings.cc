// std::string passed by reference, by value, and returned: recorded as
// its characters.
#include <cstdio>
#include <string>

struct point { int x, y; };

__attribute__((noinline)) std::string greet(const std::string &who, int n) {
    return "hi " + who + std::to_string(n);
}
__attribute__((noinline)) std::string append(std::string who, point p, int n) {
    return who + std::to_string(n + p.x);
}
__attribute__((noinline)) int size(std::string s) { return (int)s.size(); }

int main() {
    std::string w = "world";
    std::string g = greet(w, 3);
    std::string a = append(w, point{ 1, 2 }, 4);
    std::printf("%s %s %d\n", g.c_str(), a.c_str(), size(g));
}
