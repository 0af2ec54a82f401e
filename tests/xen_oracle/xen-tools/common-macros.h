#define STR(x) #x
